"""Training with the device tier bounded to a share of the ids, the rest in
the host tier, against the run that keeps every row on the device.

    python -m experiments.bench_tiers [--quick] [--devices 8] [--out FILE]

Workload: the synthetic Criteo-like stream (spec v1, seed 0, Zipf alpha
1.05), its 26 one-hot features, one table each (dim --dim, row-wise Adagrad
lr 0.05, eviction score --policy: lfu by default), the criteo-kaggle
preset's DLRM MLPs (bottom 512-256-64-dim, top 512-256-1, Adam 0.001),
batch --batch, on --devices devices, the pipeline
at depth 2 (steps in flight; tiers.py says how the host tier keeps up; after
3 stale re-runs the pipeline goes on at depth 1, pipeline.py).

First the all-device run (no host tier, tables sized for every id): its
warm-up and timed steps give the baseline samples/s and, per table, the
distinct ids the run sees (``ids``) and the most unique ids one batch looks
up. Then, per budget b in 50%, 20%, 5%, the same steps with a host tier
and each table's device rows bounded to b x its ids -- but at least 1.5 x
one batch's unique ids (a bucket must hold the rows of the step that uses
them; the effective share is reported) -- as ``max_shard_bytes``.

The all-device configuration stays alive: each budget's timed steps run in
rounds of ROUND_STEPS alternating with rounds of the all-device run going
on along its stream, and ``slowdown_vs_all_device`` divides those
all-device rounds' samples/s (``all_device_samples_per_s``) by the
budget's -- both measured in the same minute, so this machine's drift
(its speed moved by up to 30% between runs minutes apart) cancels.

One JSON line per budget (the 100% line is the all-device run's own phase),
over the timed steps: samples/s, ``slowdown_vs_all_device``, the device hit rate
(``hit_rate``: looked-up ids resident on the device / all looked-up ids,
new ids included; ``hit_rate_of_known_ids``: the same over ids seen before,
that is device hits / (device hits + promotions); ``hit_rate_vs_all_device``:
``hit_rate`` over the all-device run's, the share of the hits a device with
room for every row gets, which a short run's new ids do not cap;
``hit_rate_belady``: what Belady's MIN hits with the same rows per table on
the same steps, the most any policy could, experiments/cache_bound.py;
``lookup_hit_rate``: the same per lookup, an id a batch looks up n times
counted n times -- what a cache's hit rate usually counts -- beside
``lookup_hit_rate_ceiling``, the share of lookups of ids an earlier step
looked up, the most any policy could hit per lookup; the device's ids and
lookups are checked against the stream's), promotions, demotions and bytes moved host<->device per step, and the host
tier's lookups/s (ids staged / seconds in ``HostTier.stage``, room, transfer
to the mesh and Python included; ``host_native_lookup_keys_per_s``: / seconds
in the native lookups alone, the stager's collect and pack) and the part of
settle spent waiting for the step (``host_settle_wait_ms_per_step``). Every run
ends with I3 checked exactly: per table, inserted - promoted == device rows
+ host rows.

The last line is the summary at the 20% budget (issue 14's goals:
``hit_rate`` >= 0.90, ``slowdown_vs_all_device`` <= 1.3,
``host_lookup_keys_per_s`` >= 20M). The warm-up runs at least --warmup steps
and until 5 steps in a row neither compile (jax's compile events: a new
exchange layout, more staged or evicted rows than before, tiers.MIN_STAGED,
steps in flight or not) nor re-run; a round in which a program still
compiled is not timed and another round runs (up to EXTRA_ROUNDS;
``rounds`` and ``compiled_rounds`` say how many; counts and hit rates cover
every step of the phase, ``steps``).  ``--quick``: batch 2048, 6 + 10
steps (about 5 minutes on 2 cores, under 4 GB).
"""

from __future__ import annotations

import dataclasses
import time

from experiments.cli import mesh_bench_parser, use_fake_devices

BUDGETS = (0.5, 0.2, 0.05)
# Timed rounds: steps per round (configurations alternate between rounds), and
# rounds allowed beyond --steps / ROUND_STEPS for rounds in which a program compiled.
ROUND_STEPS = 5
EXTRA_ROUNDS = 3


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "batch 2048, 6 + 10 steps (about 2 minutes)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--policy", choices=("lfu", "lru"), default="lfu",
                   help="the device tier's eviction score (TableSpec.policy): lfu keeps the "
                        "ids looked up most, what a Zipf stream rewards")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per budget")
    args = p.parse_args(argv)
    args.batch = args.batch or (2048 if args.quick else 8192)
    args.warmup = args.warmup or (6 if args.quick else 20)
    args.steps = args.steps or (10 if args.quick else 40)
    return args


@dataclasses.dataclass
class Workload:
    model: object
    features: list
    optimizer: object
    dense_tx: object
    source: object
    params: object
    mesh: object


def workload(args) -> Workload:
    import jax
    import jax_hypereca as h
    from models import optimizers as opts
    from models.config import PRESETS, ModelConfig, sparse_specs
    from models.data import SyntheticSource
    from models.dlrm import DLRM

    preset = PRESETS["criteo-kaggle"]
    mcfg = ModelConfig(embedding_dim=args.dim, bottom_mlp=(512, 256, 64, args.dim),
                       top_mlp=(512, 256))
    optimizer = opts.sparse_optimizer("rowwise_adagrad", 0.05, initial_accumulator=0.0)
    dense_tx, _ = opts.dense_optimizer("adam", 0.001)
    _, features = sparse_specs(preset, optimizer=optimizer, budget_bytes=1 << 40,
                               embedding_dim=args.dim)
    source = SyntheticSource(names=[f.name for f in features], multi_hot=preset.multi_hot,
                             local_batch=args.batch)
    sample = jax.tree.map(lambda x: x[:args.batch], source.eval_set(args.batch))
    model = DLRM(config=mcfg, features=tuple(features))
    params = model.init(jax.random.PRNGKey(0), sample)["params"]
    return Workload(model, features, optimizer, dense_tx, source, params,
                    h.make_mesh(jax.devices()[:args.devices]))


class Config:
    """One configuration kept alive -- its collection, pipeline, state and
    own pass over the stream -- so that its timed rounds can alternate with
    another's (a machine whose speed drifts then slows both alike). Built
    and warmed up on creation; ``start`` opens a timed phase, ``round``
    runs steps in it, ``finish`` says what the phase measured."""

    def __init__(self, w: Workload, args, capacities: dict[str, int], *, host_tier: bool,
                 compiles):
        import jax_hypereca as h
        from models.train import SparseTrainer

        tables = [h.TableSpec(name=f.name, dim=args.dim, capacity=capacities[f.name],
                              optimizer=w.optimizer, seed=i, policy=args.policy)
                  for i, f in enumerate(w.features)]
        probe = h.EmbeddingCollection(tables, w.features, mesh=w.mesh)
        self.coll = h.EmbeddingCollection(tables, w.features, mesh=w.mesh,
                                          exchange="all_to_all",
                                          max_shard_bytes=probe.shard_bytes(probe.init_tables()),
                                          host_tier=host_tier)
        self.trainer = SparseTrainer(w.model, self.coll, w.dense_tx)
        self.pipe = h.TrainPipeline(self.trainer.step_fn, depth=2)
        self.batches = w.source.train_batches(0)
        self.args, self.host_tier, self.compiles = args, host_tier, compiles
        self.state, self.warm = warm_up(self.pipe, self.trainer.init_state(w.params),
                                        self.batches, compiles, args.warmup)
        self.steps_run = self.warm

    def start(self) -> None:
        tier = self.coll.host_tier
        self.tier0 = tier.stats() if self.host_tier else {}
        self.timing0 = dict(tier.timing) if self.host_tier else {}
        self.retries0 = self.trainer.step_fn.retries
        self.done, self.seconds, self.timed, self.rounds, self.compiled_rounds = [], 0.0, 0, 0, 0

    def round(self, steps: int) -> None:
        """`steps` steps and a flush; timed unless a program compiled in
        them (a new exchange layout, more staged rows than before)."""
        compiles0, t0 = self.compiles(), time.perf_counter()
        for _ in range(steps):
            self.state = self.pipe.submit(self.state, next(self.batches))
        self.state = self.pipe.flush(self.state)
        seconds = time.perf_counter() - t0
        self.done += self.pipe.pop_completed()
        self.steps_run += steps
        self.rounds += 1
        if self.compiles() != compiles0:
            self.compiled_rounds += 1
        else:
            self.seconds, self.timed = self.seconds + seconds, self.timed + steps

    def finish(self) -> dict:
        """What the phase since ``start`` measured: samples/s over its timed
        rounds, counts over all its steps."""
        done, coll = self.done, self.coll
        sums = {k: sum(int(m["stats"][t][k].sum()) for m in done for t in m["stats"])
                for k in ("queries", "hits", "unique", "lookups", "lookup_hits")}
        stats = coll.table_stats(self.state.tables)
        out = dict(seconds=self.seconds,
                   samples_per_s=self.timed * self.args.batch / self.seconds,
                   warmup_steps=self.warm, rounds=self.rounds,
                   compiled_rounds=self.compiled_rounds, phase_steps=len(done),
                   reruns_while_timed=self.trainer.step_fn.retries - self.retries0,
                   depth_run=self.pipe.running_depth, stale_reruns=self.pipe.stale_reruns,
                   most_unique={t: max(int(m["stats"][t]["queries"].sum()) for m in done)
                                for t in done[0]["stats"]},
                   ids={t: s["size"] + s.get("host_rows", 0) for t, s in stats.items()},
                   device_rows=sum(s["capacity"] for s in stats.values()),
                   capacity={t: s["capacity"] for t, s in stats.items()},
                   batches=self.steps_run, **sums)
        if self.host_tier:
            out.update(self._tier_counts(stats, len(done)))
        return out

    def _tier_counts(self, stats: dict, steps: int) -> dict:
        check_nothing_lost(stats)
        timing = {k: v - self.timing0[k] for k, v in self.coll.host_tier.timing.items()}
        moved = {k: sum(s[k] - self.tier0[t][k] for t, s in stats.items())
                 for k in ("promoted", "demoted", "bytes_to_device", "bytes_to_host", "stale")}
        keys = timing["stage_keys"]
        per_step = lambda k: timing[k] / steps
        return dict(moved, host_rows=sum(s["host_rows"] for s in stats.values()),
                    host_lookup_keys_per_s=keys / timing["stage_s"] if keys else None,
                    host_native_lookup_keys_per_s=(keys / timing["stage_lookup_s"]
                                                   if keys else None),
                    host_stage_s_per_step=per_step("stage_s"),
                    host_settle_s_per_step=per_step("settle_s"),
                    host_settle_wait_s_per_step=per_step("settle_wait_s"))


def timed(configs: list[Config], args) -> list[dict]:
    """Alternating rounds of ROUND_STEPS steps of each configuration until
    each has at least --steps steps in rounds that compiled nothing (at most
    EXTRA_ROUNDS more rounds in all); what each measured."""
    for c in configs:
        c.start()
    most = -(-args.steps // ROUND_STEPS) + EXTRA_ROUNDS
    for _ in range(most):  # every configuration runs every round: same round lengths
        if all(c.timed >= args.steps for c in configs):
            break
        for c in configs:
            c.round(ROUND_STEPS)
    for c in configs:
        if not c.timed:
            raise RuntimeError(f"every one of {c.rounds} rounds compiled a program: nothing "
                               f"was timed (raise --warmup)")
    return [c.finish() for c in configs]


def with_bound(w: Workload, r: dict, args) -> dict:
    """`r` with ``belady``: the hit rate Belady's MIN gets with the same rows
    per table over the same timed steps of the same stream (cache_bound.py:
    the most any policy could hit), and ``lookup_ceiling``: the share of
    those steps' lookups whose id an earlier step looked up (what unbounded
    rows hit per lookup). The steps' ids and lookups counted on the host
    must equal the device's ``queries`` and ``lookups`` exactly."""
    from experiments.cache_bound import belady_hits, step_lookups

    looked_up = step_lookups(w.source.train_batches(0), list(r["capacity"]), r["batches"])
    counted = range(r["batches"] - r["phase_steps"], r["batches"])
    sums = dict.fromkeys(("hits", "ids", "seen", "lookups"), 0)
    for t, pairs in looked_up.items():
        steps, counts = [u for u, _ in pairs], [c for _, c in pairs]
        h, n = belady_hits(steps, r["capacity"][t], counted)
        seen, lookups = belady_hits(steps, 1 << 40, counted, counts)
        for k, v in zip(sums, (h, n, seen, lookups)):
            sums[k] += v
    if (sums["ids"], sums["lookups"]) != (r["queries"], r["lookups"]):
        raise AssertionError(f"the device counted {r['queries']} ids and {r['lookups']} "
                             f"lookups in the timed steps, the stream has {sums['ids']} "
                             f"and {sums['lookups']}")
    return dict(r, belady=sums["hits"] / sums["ids"],
                lookup_ceiling=sums["seen"] / sums["lookups"])


def warm_up(pipe, state, batches, compiles, least: int):
    """At least `least` steps, and until 5 in a row neither compile nor
    re-run; returns (state, steps run)."""
    settled, warm = 0, 0
    while warm < least or settled < 5:
        before = compiles(), pipe.step.retries
        state = pipe.submit(state, next(batches))
        settled, warm = (settled + 1 if (compiles(), pipe.step.retries) == before
                         else 0), warm + 1
        if warm > 10 * least:
            raise RuntimeError(f"the steps kept compiling or re-running after {warm} steps")
    state = pipe.flush(state)
    pipe.pop_completed()
    return state, warm


def compile_counter():
    """A function returning how many XLA compiles ran since this call."""
    from jax._src import monitoring  # the event jax's own dispatch reports

    count = [0]

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    monitoring.register_event_duration_secs_listener(listen)
    return lambda: count[0]


def check_nothing_lost(stats: dict) -> None:
    """I3, exactly: every id inserted is on the device or in the host tier."""
    for t, s in stats.items():
        if s["inserted"] - s["promoted"] != s["size"] + s["host_rows"]:
            raise AssertionError(f"table {t}: inserted {s['inserted']} - promoted "
                                 f"{s['promoted']} != device {s['size']} + host "
                                 f"{s['host_rows']}")


def budget_capacities(base: dict, share: float, devices: int) -> dict[str, int]:
    """Device rows per table: share x its ids, at least 1.5 x one batch's
    unique ids and 32 per shard (an owner's share of a batch varies), in
    whole buckets of 128 per shard."""
    out = {}
    for t, ids in base["ids"].items():
        rows = max(int(share * ids), int(1.5 * base["most_unique"][t]))
        per_shard = max(32, -(-rows // devices))
        out[t] = devices * (-(-per_shard // 128) * 128 if per_shard > 128 else per_shard)
    return out


def record(args, share, r: dict, base: dict, reference: dict) -> dict:
    """One budget's line: `r` its phase, `base` the all-device run's first
    phase (ids, hit rates), `reference` the all-device rounds timed
    alternately with `r`'s (the slowdown's numerator)."""
    steps = r["phase_steps"]
    rec = {"bench": "tiers", "devices": args.devices, "batch": args.batch, "dim": args.dim,
           "policy": args.policy,
           "budget_share": share, "ids": sum(base["ids"].values()),
           "device_rows": r["device_rows"],
           "effective_share": r["device_rows"] / sum(base["ids"].values()),
           "samples_per_s": r["samples_per_s"],
           "all_device_samples_per_s": reference["samples_per_s"],
           "slowdown_vs_all_device": reference["samples_per_s"] / r["samples_per_s"],
           "hit_rate": r["hits"] / r["queries"],
           "hit_rate_vs_all_device": (r["hits"] / r["queries"]) / (base["hits"] / base["queries"]),
           "hit_rate_belady": r["belady"], "hit_rate_vs_belady": r["hits"] / r["queries"]
           / r["belady"],
           "lookup_hit_rate": r["lookup_hits"] / r["lookups"],
           "lookup_hit_rate_ceiling": r["lookup_ceiling"], "lookups": r["lookups"],
           "steps": steps, "round_steps": ROUND_STEPS, "rounds": r["rounds"],
           "compiled_rounds": r["compiled_rounds"], "warmup_steps": r["warmup_steps"],
           "reruns_while_timed": r["reruns_while_timed"],
           "pipeline_depth": 2, "pipeline_depth_at_the_end": r["depth_run"],
           "stale_reruns": r["stale_reruns"]}
    if share < 1:
        rec.update(hit_rate_of_known_ids=r["hits"] / (r["hits"] + r["promoted"]),
                   promoted_per_step=r["promoted"] / steps, demoted_per_step=r["demoted"] / steps,
                   bytes_to_device_per_step=r["bytes_to_device"] / steps,
                   bytes_to_host_per_step=r["bytes_to_host"] / steps,
                   stale_ids=r["stale"], host_rows=r["host_rows"],
                   host_lookup_keys_per_s=r["host_lookup_keys_per_s"],
                   host_native_lookup_keys_per_s=r["host_native_lookup_keys_per_s"],
                   host_stage_ms_per_step=1e3 * r["host_stage_s_per_step"],
                   host_settle_ms_per_step=1e3 * r["host_settle_s_per_step"],
                   host_settle_wait_ms_per_step=1e3 * r["host_settle_wait_s_per_step"])
    return rec


def main(argv=None) -> dict:
    args = parse(argv)
    use_fake_devices(args.devices)
    from experiments.harness import JsonLines, environment, release_memory

    out = JsonLines(args.out)
    out.emit(environment())
    w = workload(args)
    compiles = compile_counter()
    # room for every id the all-device run can see: its own phase and one
    # beside each budget's (each sample brings at most one id per table)
    phases = (1 + len(BUDGETS)) * (args.steps + EXTRA_ROUNDS * ROUND_STEPS)
    roomy = {f.name: int(1.5 * (3 * args.warmup + phases) * args.batch) for f in w.features}
    all_device = Config(w, args, roomy, host_tier=False, compiles=compiles)
    base = with_bound(w, timed([all_device], args)[0], args)
    out.emit(record(args, 1.0, base, base, base))
    lines = {}
    for share in BUDGETS:
        c = Config(w, args, budget_capacities(base, share, args.devices), host_tier=True,
                   compiles=compiles)
        reference, r = timed([all_device, c], args)
        lines[share] = out.emit(record(args, share, with_bound(w, r, args), base, reference))
        del c
        release_memory(clear_caches=False)
    at = lines[0.2]
    summary = {"bench": "tiers_summary", "budget_share": 0.2, "policy": args.policy,
               "effective_share": at["effective_share"], "hit_rate": at["hit_rate"],
               "hit_rate_of_known_ids": at["hit_rate_of_known_ids"],
               "hit_rate_vs_all_device": at["hit_rate_vs_all_device"],
               "hit_rate_belady": at["hit_rate_belady"],
               "hit_rate_vs_belady": at["hit_rate_vs_belady"],
               "lookup_hit_rate": at["lookup_hit_rate"],
               "lookup_hit_rate_ceiling": at["lookup_hit_rate_ceiling"],
               "slowdown_vs_all_device": at["slowdown_vs_all_device"],
               "host_lookup_keys_per_s": at["host_lookup_keys_per_s"],
               "host_native_lookup_keys_per_s": at["host_native_lookup_keys_per_s"],
               "goals": {"hit_rate": 0.90, "slowdown_vs_all_device": 1.3,
                         "host_lookup_keys_per_s": 20e6}}
    out.emit(summary)
    out.close()
    return summary


if __name__ == "__main__":
    main()
