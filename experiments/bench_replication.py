"""Hot-id replication: coverage, the performance model against measurements,
and the planner's choice, on the synthetic Criteo-like stream.

    python -m experiments.bench_replication --devices 8 [--quick] [--out FILE]

Pinned stream: shared/data/synthetic_criteo_spec.md, seed 0, vocab capped at
1,000,000 rows per feature, alpha in {0.8, 1.05, 1.2}, 1024 samples per
device per step, dim 64, row-wise Adagrad. Per alpha: rho(R) from an exact
peek; the R chosen for the paper's cluster profile (planned from what its 32
GPUs with 16,384 samples each would exchange) and for this mesh's measured
profile; exact cold-exchange lookups and step time at those plans
relative to R = 0 (interleaved). At alpha 1.05 also a sweep of R: measured
step time against the model's L(R) (fit r^2) and the planner's R against the
best R of the sweep. For the real Criteo samples in shared/data/criteo/
(read at run time; skipped when absent) rho(R) only. Fake CPU devices make
the exchange a memory copy, so the speedup measured here is small by nature
and a small R is the model working. The last line is the summary at 1.05.
Configurations run two at a time beside R = 0 (run_configs: memory).
``--quick`` (about 4 minutes, under 4 GB): 20 peek batches, 6 timed steps,
the configurations timed at alpha 1.05 only, each paired with R = 0 (0.8
and 1.2: rho and the plans), the sweep at R in {0, 64, 1024, 8192}, tables
of at most 2^16 rows.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import numpy as np  # numpy does not start JAX; everything that imports jax does so after
                    # use_fake_devices, inside the functions below

from experiments.cli import mesh_bench_parser, use_fake_devices

PER_DEVICE, DIM = 1024, 64
PAPER_BATCH, WARMUP = 16384, 3
BUDGET = 256 << 20  # replicas of all tables, per device
R_GRID = np.array([0, 16, 64, 256, 1024, 4096, 16384, 65536])
# --quick: the sweep at 4 points, the configurations run at alpha 1.05 only
# (0.8 and 1.2: rho and the plans), one alive at a time beside R = 0
# (and tables of at most 2^16 rows: a quick run inserts at most 9 x 8192 ids
# per table, ~40k distinct in the largest; R = 16384 has 214k hot rows,
# ~0.8 GB of replicas and sums on 8 fake devices, past 4 GB beside R = 0)
QUICK = dict(r_grid=(0, 64, 1024, 8192), timed_alphas=(1.05,), group=1, max_rows=1 << 15)
GOALS = dict(bytes_removed=0.80, prediction_error=0.05, projected_speedup_vs_r0=1.6,
             model_r2=0.9, chosen_vs_best=1.05)


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "fewer batches (a few minutes)")
    p.add_argument("--data", default=str(pathlib.Path(__file__).resolve().parents[2] /
                                         "shared" / "data" / "criteo"),
                   help="folder with the real Criteo samples (rho only)")
    return p.parse_args(argv)


@dataclasses.dataclass(eq=False)
class Bench:
    """The pinned workload on this mesh and how long to run it."""

    mesh: Any
    vocab: list[int]
    head: Any
    peek_batches: int
    paper_batches: int
    timed_steps: int
    repeats: int
    r_grid: tuple = tuple(int(r) for r in R_GRID)  # the sweep at alpha 1.05
    timed_alphas: tuple = (0.8, 1.05, 1.2)  # where the configurations are run
    group: int = 2  # configurations alive at once besides R = 0
    max_rows: int = 1 << 16  # a table's capacity: twice its vocabulary up to this
    live: Any = None  # this mesh's measured profile: a property of the mesh, not of alpha

    @property
    def devices(self) -> int:
        return self.mesh.shape["shard"]

    @property
    def features(self) -> int:
        return len(self.vocab)

    def make_collection(self):
        import jax_hypereca as h

        tables = [h.TableSpec(name=f"t{f}", dim=DIM, capacity=min(v, self.max_rows) * 2,
                              optimizer=h.RowwiseAdagrad(learning_rate=0.05)) for f, v in
                  enumerate(self.vocab)]
        feats = [h.FeatureSpec(name=f"f{f}", table=f"t{f}") for f in range(self.features)]
        # no capacity re-fits inside the timed steps (each would recompile)
        return h.EmbeddingCollection(tables, feats, mesh=self.mesh, retune_every=0)

    def loss_fn(self, params, emb, batch):
        import jax.numpy as jnp
        import optax

        x = jnp.concatenate([emb[f"f{f}"] for f in range(self.features)], axis=1)
        return optax.sigmoid_binary_cross_entropy(x @ params["head"], batch["y"]).mean()

    def host_batch(self, gen, s, devices=None, batch_per_device=PER_DEVICE):
        n = batch_per_device * (devices or self.devices)
        _, ids, y = gen.samples(s * n, n)
        return {"ids": {f"f{f}": ids[:, f, 0] for f in range(self.features)}, "y": y}


def _total(stats, key):
    return sum(int(v[key].sum()) for v in stats.values())


def rho_of(stats, exchanged: int) -> dict[int, float]:
    """rho(R) over all tables at every R of the grid."""
    from jax_hypereca.planner import covered_lookups

    return {int(r): float(sum(covered_lookups(s, int(r)) for s in stats) / exchanged)
            for r in R_GRID}


def _start_run(b: Bench, hot: dict, coll=None, step=None) -> list:
    """[collection, step, state with `hot` applied, step times, remote lookups]
    (a given collection and step are reused: no new compile)."""
    import optax

    from jax_hypereca import replication as rep

    coll = coll or b.make_collection()
    step = step or coll.make_train_step(b.loss_fn, optax.set_to_zero())
    state = coll.init_train_state({"head": b.head}, optax.set_to_zero())
    return [coll, step, rep.apply_plan(coll, state, hot), [], 0]


def _time_runs(b: Bench, gen, runs: dict, start: int) -> dict:
    """Interleaved steps of each run; median step seconds and exact counts."""
    import jax

    for s in range(WARMUP + b.timed_steps):
        batch = b.host_batch(gen, start + s)
        for r in runs.values():
            t0 = time.perf_counter()
            r[2], m = r[1](r[2], batch)
            jax.block_until_ready(r[2].step)
            if s >= WARMUP:
                r[3].append(time.perf_counter() - t0)
                r[4] += _total(m["stats"], "remote_unique")
    return {n: dict(seconds=float(np.median(r[3])), remote=r[4]) for n, r in runs.items()}


def run_configs(b: Bench, gen, configs: dict, start: int):
    """Each hot configuration's steps, interleaved with R = 0's, at most
    ``b.group`` configurations besides R = 0 alive at once (each holds its
    own tables: all at once took ~10 GB). R = 0 (its collection and compiled
    step kept, its state fresh) runs in every group; a group's times are
    scaled by the first group's R = 0 time over its own (``r0_drift``
    reports the spread). Exact counts are not scaled."""
    from experiments.harness import release_memory

    names = [n for n in configs if n != "r0"]
    out, drift, base = {}, [], None
    for i in range(0, len(names), b.group):
        base = _start_run(b, configs["r0"], *(base[:2] if base else ()))
        runs = {"r0": base, **{n: _start_run(b, configs[n]) for n in names[i:i + b.group]}}
        res = _time_runs(b, gen, runs, start)
        out.setdefault("r0", res["r0"])
        scale = out["r0"]["seconds"] / res["r0"]["seconds"]
        drift.append(scale)
        for n in names[i:i + b.group]:
            out[n] = dict(res[n], seconds=res[n]["seconds"] * scale)
        del runs, res
        release_memory(clear_caches=False)  # R = 0's step is reused
    out["r0"]["r0_drift"] = [float(x) for x in drift]
    return out


def plans(out, b: Bench, gen, alpha: float):
    """The exact peek (rho emitted), and the plans for the paper's cluster and
    this mesh: (stats, exchanged lookups, paper plan, live profile, live plan)."""
    from experiments.harness import release_memory
    from jax_hypereca import replication as rep
    from jax_hypereca.planner import exchanged_lookups, paper_profile

    paper = paper_profile()
    probe = b.make_collection()
    stats = rep.peek(probe, (b.host_batch(gen, s) for s in range(b.peek_batches)),
                     max_batches=b.peek_batches)
    exchanged = sum(exchanged_lookups(s) for s in stats)
    out.emit(dict(bench="replication_rho", alpha=alpha, devices=b.devices,
                  batch_per_device=PER_DEVICE, peek_batches=b.peek_batches,
                  rho_per_table_R=rho_of(stats, exchanged),
                  distinct_exchanged_ids=int(sum(s.num_ids for s in stats))))
    # the paper's profile models its cluster's workload: 32 GPUs with
    # 16,384 samples each per step; plan from what that mesh would exchange
    stats32 = rep.peek(probe, (b.host_batch(gen, s, paper.num_devices, PAPER_BATCH)
                               for s in range(b.paper_batches)),
                       max_batches=b.paper_batches, num_devices=paper.num_devices)
    release_memory()
    plan_paper = rep.plan(probe, stats32, paper, memory_budget_bytes=BUDGET)
    # the paper's own scheme (every hot row all-reduced each step), for comparison
    dense = rep.plan(probe, stats32, paper, memory_budget_bytes=BUDGET, hot_exchange="dense")
    out.emit(dict(bench="replication_plan_dense_hot_exchange", alpha=alpha,
                  paper_R_total=int(sum(dense.hot_rows.values())),
                  projected_speedup_vs_r0=dense.unreplicated_step_s / dense.predicted_step_s))
    if b.live is None:  # measured once per run
        b.live = rep.measure_profile(probe, dim=DIM, repeats=b.repeats)
    plan_live = rep.plan(probe, stats, b.live, memory_budget_bytes=BUDGET)
    return stats, exchanged, plan_paper, b.live, plan_live


def model_fit(out, stats, live, alpha: float, names: list[str], hot_of: dict, res: dict):
    """Measured step time against the model's L(R) over the sweep: (fit r^2,
    measured seconds per config in `names` order)."""
    from jax_hypereca.planner import TableCostModel

    models = {s.name: TableCostModel(s, live, optimizer_state_floats_per_row=1,
                                         hot_exchange="touched") for s in stats}
    pred = np.array([sum(float(models[t].latency(len(hot_of[n].get(t, [])))) for t in models)
                     for n in names])
    meas = np.array([res[n]["seconds"] for n in names])
    a, b_ = np.polyfit(pred, meas, 1)
    r2 = 1 - np.sum((meas - (a * pred + b_)) ** 2) / np.sum((meas - meas.mean()) ** 2)
    for n, p_, m_ in zip(names, pred, meas):
        out.emit(dict(bench="replication_model", alpha=alpha, config=n,
                      predicted_exchange_s=float(p_), measured_step_s=float(m_)))
    return r2, meas


def bench_alpha(out, b: Bench, alpha: float) -> dict:
    """Everything at one alpha; returns the summary record at 1.05, else {}."""
    from experiments.harness import peak_rss_mb, release_memory
    from jax_hypereca.data import SyntheticConfig, SyntheticCriteo
    from jax_hypereca.planner import hot_ids

    gen = SyntheticCriteo(SyntheticConfig(seed=0, vocab_sizes=b.vocab, alpha=alpha))
    stats, exchanged, plan_paper, live, plan_live = plans(out, b, gen, alpha)
    hot_paper = {tp.name: tp.hot_ids for tp in plan_paper.tables}
    hot_live = {tp.name: tp.hot_ids for tp in plan_live.tables}
    # predicted here: the share of this mesh's peeked exchange the plan's
    # hot ids absorb (the measurement uses the batches after the peek)
    predicted_removed = sum(int(st.counts[np.isin(st.ids, hot_paper[st.name])].sum())
                            for st in stats) / exchanged
    configs = {"r0": {f"t{f}": [] for f in range(b.features)}, "paper": hot_paper,
               "live": hot_live}
    sweep = ({f"r{r}": {s.name: hot_ids(s, int(r)) for s in stats} for r in b.r_grid[1:]}
             if alpha == 1.05 else {})
    hot_of = {**configs, **sweep}
    res = run_configs(b, gen, hot_of, start=b.peek_batches) if alpha in b.timed_alphas else {}
    release_memory()
    base = res.get("r0", {"remote": 0})
    for name, r in res.items():
        out.emit(dict(bench="replication_run", alpha=alpha, config=name,
                      hot_rows=int(sum(len(v) for v in hot_of[name].values())),
                      seconds_median=r["seconds"], step_time_vs_r0=r["seconds"] /
                      base["seconds"], cold_remote_lookups=r["remote"],
                      cold_bytes_vs_r0=r["remote"] / max(base["remote"], 1)))
    measured_removed = 1.0 - res["paper"]["remote"] / max(base["remote"], 1) if res else None
    projected = plan_paper.unreplicated_step_s / plan_paper.predicted_step_s
    out.emit(dict(bench="replication_plan", alpha=alpha,
                  paper_profile=plan_paper.profile_name, paper_R=plan_paper.hot_rows,
                  live_profile=live.name, live_R=plan_live.hot_rows,
                  live_c_ar_per_byte=live.c_ar_per_byte,
                  live_c_a2a_per_byte=live.c_a2a_per_byte,
                  predicted_bytes_removed=predicted_removed,
                  measured_bytes_removed=measured_removed,
                  projected_speedup_vs_r0=projected))
    if alpha != 1.05:
        return {}
    r2, meas = model_fit(out, stats, live, alpha, ["r0"] + list(sweep) + ["live"], hot_of, res)
    return dict(
        bench="replication_summary", alpha=alpha, devices=b.devices,
        bytes_removed=measured_removed,
        prediction_error=abs(measured_removed - predicted_removed),
        projected_speedup_vs_r0=projected,
        measured_speedup_vs_r0=base["seconds"] / res["live"]["seconds"],
        model_r2=float(r2), chosen_vs_best=float(res["live"]["seconds"] / min(meas[:-1])),
        sweep_R=[int(r) for r in b.r_grid], r0_drift=base["r0_drift"],
        peak_rss_mb=peak_rss_mb(),
        paper_R_total=int(sum(plan_paper.hot_rows.values())),
        live_R_total=int(sum(plan_live.hot_rows.values())),
        goals=GOALS)


def criteo_samples(out, b: Bench, data: pathlib.Path) -> None:
    """rho(R) on the real Criteo samples in `data`, or a record saying they are absent."""
    files = sorted([*data.glob("paddlerec_raw_sample_*.tsv"),
                    *data.glob("deepctr_criteo_sample.txt")]) if data.is_dir() else []
    if not files:
        out.emit(dict(bench="replication_rho_criteo_samples", skipped=f"no samples in {data}"))
        return
    from jax_hypereca import replication as rep
    from jax_hypereca.data import iter_batches
    from jax_hypereca.planner import exchanged_lookups

    probe = b.make_collection()
    batches = []
    for path in files:
        for batch in iter_batches(str(path), b.devices, drop_remainder=True):
            batches.append({"ids": {f"f{f}": batch.ids[:, f, 0] for f in range(b.features)}})
    stats = rep.peek(probe, batches, max_batches=len(batches))
    exchanged = max(1, sum(exchanged_lookups(s) for s in stats))
    out.emit(dict(bench="replication_rho_criteo_samples", rows=sum(
        len(batch["ids"]["f0"]) for batch in batches), files=[p.name for p in files],
        rho_per_table_R=rho_of(stats, exchanged)))


def main(argv=None):
    args = parse(argv)
    use_fake_devices(args.devices)
    import jax
    import jax.numpy as jnp

    import jax_hypereca as h
    from experiments.harness import JsonLines, environment
    from jax_hypereca.data import default_vocab_sizes

    out = JsonLines(args.out)
    out.emit(environment())
    mesh = h.make_mesh(axis_name="shard")
    vocab = default_vocab_sizes(1_000_000)
    F = len(vocab)
    b = Bench(mesh=mesh, vocab=vocab,
              head=jax.random.normal(jax.random.PRNGKey(0), (F * DIM,), jnp.float32)
              / np.sqrt(F * DIM),
              peek_batches=20 if args.quick else 100, paper_batches=3 if args.quick else 20,
              timed_steps=6 if args.quick else 20, repeats=3 if args.quick else 7,
              **(QUICK if args.quick else {}))
    summary = {}
    for alpha in (0.8, 1.05, 1.2):
        summary = bench_alpha(out, b, alpha) or summary
    criteo_samples(out, b, pathlib.Path(args.data))
    out.emit(summary)
    out.close()


if __name__ == "__main__":
    main()
