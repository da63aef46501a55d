"""Embedding-only training step: this design against the naive JAX approach.

    python -m experiments.bench_exchange --devices 8 [--quick] [--out FILE]

Pinned workload: the synthetic Criteo-like stream (shared/data/
synthetic_criteo_spec.md; seed 0, alpha 1.05, vocab capped at 100,000 rows
per feature), global batch 4096, dim 64, row-wise Adagrad. The step looks up
the 26 features, applies a fixed linear head and the BCE loss, differentiates
with respect to the rows and updates the tables.

Naive JAX, at equal table memory: one row-sharded jnp table per feature,
ids used as row indices under plain jit (XLA's own gather), in two variants:
a dense update of the whole tables, and a sparse ``.at[].add`` update.
Reports step times (medians, interleaved) and exact exchange bytes.

Then the exchange strategies against each other (DESIGN section 3.3): the
same step with ``exchange="all_to_all"`` and ``exchange="ring"`` on 2, 4 and
8 devices (up to --devices), interleaved, plus what ``exchange="auto"``
keeps there after its own trial (the two take turns on its first steps).
Both move the same bytes (asserted).
Capacities are not re-fitted there (fixed after the first overflow) and
tables have twice the vocabulary's rows, so no step recompiles.

The last line is the summary: ``speedup_vs_naive`` (over the faster naive
variant), ``bytes_vs_minimum`` (forward row bytes sent, padding included, over
the minimum: each device's unique ids owned by other devices x dim x 4),
``ring_vs_all_to_all`` (all-to-all step time over ring step time at the
largest device count; above 1 the ring is faster) and ``auto_picked_faster``
(at every device count, whether auto kept the strategy whose step was faster
here, or one within 5% of it).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any

import numpy as np  # numpy does not start JAX; everything that imports jax does so after
                    # use_fake_devices, inside the functions below

from experiments.cli import mesh_bench_parser, use_fake_devices


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "fewer steps (about 2 minutes)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-vocab", type=int, default=100_000)
    return p.parse_args(argv)


@dataclasses.dataclass(eq=False)
class Workload:
    """The pinned step: sizes, the Adagrad settings, the mesh and the fixed head."""

    vocab: list[int]
    dim: int
    batch: int
    steps: int
    warmup: int
    mesh: Any
    head: Any
    lr: float = 0.05
    eps: float = 1e-8
    exchange: str = "all_to_all"
    retune_every: int = 4
    headroom: float = 1.0  # table capacity = headroom x vocabulary

    @property
    def features(self) -> int:
        return len(self.vocab)

    @property
    def devices(self) -> int:
        return self.mesh.shape["shard"]


def make_ours(w: Workload):
    """This design's train step: (step(state, ids, labels), collection, compiled step, state)."""
    import jax.numpy as jnp
    import optax

    import jax_hypereca as h

    F = w.features
    tables = [h.TableSpec(name=f"t{f}", dim=w.dim, capacity=int(w.headroom * v),
                          optimizer=h.RowwiseAdagrad(learning_rate=w.lr, eps=w.eps))
              for f, v in enumerate(w.vocab)]
    feats = [h.FeatureSpec(name=f"f{f}", table=f"t{f}") for f in range(F)]
    coll = h.EmbeddingCollection(tables, feats, mesh=w.mesh, retune_every=w.retune_every,
                                 exchange=w.exchange)

    def loss_fn(params, emb, batch):
        x = jnp.concatenate([emb[f"f{f}"] for f in range(F)], axis=1)
        return optax.sigmoid_binary_cross_entropy(x @ params["head"], batch["y"]).mean()

    fixed = optax.set_to_zero()
    step = coll.make_train_step(loss_fn, fixed)
    state = coll.init_train_state({"head": w.head}, fixed)

    def ours(state, ids, labels):
        return step(state, {"ids": {f"f{f}": ids[:, f] for f in range(F)}, "y": labels})

    return ours, coll, step, state


def make_naive(w: Workload):
    """The naive JAX steps, {"dense", "sparse"} -> (step fn, (tables, accumulators))."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import NamedSharding, PartitionSpec as P

    import jax_hypereca as h

    row_sharded = NamedSharding(w.mesh, P("shard", None))
    padded = [int(np.ceil(v / w.devices) * w.devices) for v in w.vocab]
    lr, eps, head = w.lr, w.eps, w.head

    def naive_tables():
        t = [jax.device_put(jnp.asarray(h.init_rows(0, np.arange(v), w.dim, h.uniform(0.05))),
                            row_sharded) for v in padded]
        a = [jax.device_put(jnp.full((v, 1), 0.1, jnp.float32), row_sharded) for v in padded]
        return t, a

    def naive_loss(rows, labels):
        x = jnp.concatenate(rows, axis=1)
        return optax.sigmoid_binary_cross_entropy(x @ head, labels).mean()

    @jax.jit
    def naive_dense(ts, accs, ids, labels):
        def loss(ts):
            return naive_loss([t[ids[:, f]] for f, t in enumerate(ts)], labels)
        l, g = jax.value_and_grad(loss)(ts)
        new_t, new_a = [], []
        for t, a, gt in zip(ts, accs, g):
            a = a + jnp.mean(gt * gt, axis=1, keepdims=True)
            new_t.append(t - lr * gt / (jnp.sqrt(a) + eps))
            new_a.append(a)
        return new_t, new_a, l

    @jax.jit
    def naive_sparse(ts, accs, ids, labels):
        rows = [t[ids[:, f]] for f, t in enumerate(ts)]
        l, g = jax.value_and_grad(naive_loss)(rows, labels)
        new_t, new_a = [], []
        for f, (t, a, gr) in enumerate(zip(ts, accs, g)):
            i = ids[:, f]
            a = a.at[i].add(jnp.mean(gr * gr, axis=1, keepdims=True))
            new_t.append(t.at[i].add(-lr * gr / (jnp.sqrt(a[i]) + eps)))
            new_a.append(a)
        return new_t, new_a, l

    donate_dense = jax.jit(naive_dense, donate_argnums=(0, 1))
    donate_sparse = jax.jit(naive_sparse, donate_argnums=(0, 1))
    return {"dense": (donate_dense, naive_tables()), "sparse": (donate_sparse, naive_tables())}


def run_interleaved(out, w: Workload, cfg: dict, data, ours, state, naive):
    """Every step of every variant, interleaved so machine noise hits them
    alike; emits one record per timed step. Returns (times per variant,
    row bytes sent per step, minimum row bytes per step)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    batch_sh = NamedSharding(w.mesh, P("shard"))
    fns = {name: fn for name, (fn, _) in naive.items()}
    nv = {name: tables for name, (_, tables) in naive.items()}
    times = {"ours": [], "naive_dense": [], "naive_sparse": []}
    bytes_sent, bytes_min = [], []
    for s, (ids, labels) in enumerate(data):
        t0 = time.perf_counter()
        state, m = ours(state, ids, labels)
        jax.block_until_ready(state.tables["t0"].values)
        t_ours = time.perf_counter() - t0
        jids = jax.device_put(jnp.asarray(ids, jnp.int32), batch_sh)
        jl = jax.device_put(jnp.asarray(labels), batch_sh)
        tn = {}
        for name in ("dense", "sparse"):
            t0 = time.perf_counter()
            t, a, _ = fns[name](*nv[name], jids, jl)
            jax.block_until_ready(t)
            tn[name] = time.perf_counter() - t0
            nv[name] = (t, a)
        if s < w.warmup:
            continue
        times["ours"].append(t_ours)
        times["naive_dense"].append(tn["dense"])
        times["naive_sparse"].append(tn["sparse"])
        st = m["stats"]
        remote = sum(int(v["remote_unique"].sum()) for v in st.values())
        bytes_min.append(remote * w.dim * 4)
        bytes_sent.append(w.devices * m["bytes_per_step"]["rows"])
        out.emit(dict(bench="exchange_step", step=s, **cfg, seconds_ours=t_ours,
                      seconds_naive_dense=tn["dense"], seconds_naive_sparse=tn["sparse"],
                      rows_bytes_sent=bytes_sent[-1], rows_bytes_minimum=bytes_min[-1],
                      ids=sum(int(v["ids"].sum()) for v in st.values()),
                      unique_ids=sum(int(v["unique"].sum()) for v in st.values()),
                      remote_unique_ids=remote, loss=m["loss"]))
    return times, bytes_sent, bytes_min


def compare_strategies(out, w: Workload, cfg: dict, data) -> dict:
    """All-to-all vs ring (and auto's pick) on 2, 4, ... w.devices devices,
    steps interleaved. Returns {devices: (median s all_to_all, median s ring,
    auto's pick)}."""
    import jax

    import jax_hypereca as h

    result = {}
    for n in [d for d in (2, 4, 8) if d <= w.devices]:
        mesh = h.make_mesh(jax.devices()[:n], axis_name="shard")
        # Capacities fixed after the first overflow and tables with room (no
        # re-fits or growth, so no recompiles inside the timed steps); the
        # exchange buffers the same for every strategy.
        runs = {x: make_ours(dataclasses.replace(w, mesh=mesh, exchange=x, retune_every=0,
                                                 headroom=2.0))
                for x in ("all_to_all", "ring", "auto")}
        states = {x: r[3] for x, r in runs.items()}
        times = {x: [] for x in runs}
        for s, (ids, labels) in enumerate(data):
            sent = {}
            for x, (ours, _, _, _) in runs.items():
                t0 = time.perf_counter()
                states[x], m = ours(states[x], ids, labels)
                jax.block_until_ready(states[x].tables["t0"].values)
                times[x].append(time.perf_counter() - t0)
                sent[x] = m["bytes_per_step"]
            assert sent["ring"] == sent["all_to_all"], sent
            if s >= w.warmup:
                out.emit(dict(bench="exchange_strategy_step", step=s, **dict(cfg, devices=n),
                              seconds_all_to_all=times["all_to_all"][-1],
                              seconds_ring=times["ring"][-1], seconds_auto=times["auto"][-1],
                              bytes_sent_per_device=sent["ring"]))
        med = {x: float(np.median(t[w.warmup:])) for x, t in times.items()}
        auto = runs["auto"][1]
        out.emit(dict(bench="exchange_strategy", **dict(cfg, devices=n),
                      seconds_median_all_to_all=med["all_to_all"],
                      seconds_median_ring=med["ring"], ring_vs_all_to_all=med["all_to_all"]
                      / med["ring"], auto_picked=auto.exchange,
                      auto_trial_median_s=auto.exchange_timings))
        result[n] = (med["all_to_all"], med["ring"], auto.exchange)
        # free this device count's tables before the next one's are built
        # (three sets alive at once is the bench's peak memory)
        del runs, states, auto
        gc.collect()
    return result


def _auto_picked_faster(result: dict) -> bool:
    """Whether auto kept, at every device count, the strategy whose measured
    step was faster (or within 5% of the faster one)."""
    for a2a, ring, pick in result.values():
        picked, other = (ring, a2a) if pick == "ring" else (a2a, ring)
        if picked > 1.05 * other:
            return False
    return True


def main(argv=None):
    args = parse(argv)
    use_fake_devices(args.devices)
    import jax
    import jax.numpy as jnp

    import jax_hypereca as h
    from experiments.harness import JsonLines, environment
    from jax_hypereca.data import SyntheticConfig, SyntheticCriteo, default_vocab_sizes

    out = JsonLines(args.out)
    out.emit(environment())
    vocab = default_vocab_sizes(args.max_vocab)
    gen = SyntheticCriteo(SyntheticConfig(seed=0, vocab_sizes=vocab, alpha=1.05))
    D, B, F = args.dim, args.batch, len(vocab)
    w = Workload(vocab=vocab, dim=D, batch=B, steps=12 if args.quick else 40, warmup=3,
                 mesh=h.make_mesh(axis_name="shard"),
                 head=jax.random.normal(jax.random.PRNGKey(0), (F * D,), jnp.float32)
                 / np.sqrt(F * D))
    data = []
    for s in range(w.warmup + w.steps):
        _, ids, labels = gen.samples(s * B, B)
        data.append((ids[:, :, 0], labels))
    cfg = dict(devices=w.devices, batch=B, dim=D, features=F, table_rows=sum(vocab), alpha=1.05,
               max_vocab=args.max_vocab, steps=w.steps)
    ours, coll, step, state = make_ours(w)
    naive = make_naive(w)
    times, bytes_sent, bytes_min = run_interleaved(out, w, cfg, data, ours, state, naive)
    med = {k: float(np.median(v)) for k, v in times.items()}
    best_naive = min(med["naive_dense"], med["naive_sparse"])
    for k, v in med.items():
        out.emit(dict(bench="exchange", variant=k, **cfg, seconds_median=v,
                      samples_per_s=B / v))
    layout = coll.layout(B)
    strategies = compare_strategies(out, w, cfg, data)
    a2a, ring, _ = strategies[max(strategies)] if strategies else (np.nan, np.nan, None)
    out.emit(dict(bench="exchange_summary", **cfg,
                  ring_vs_all_to_all=a2a / ring, auto_picked_faster=_auto_picked_faster(
                      strategies),
                  speedup_vs_naive=best_naive / med["ours"],
                  faster_naive="naive_dense" if med["naive_dense"] < med["naive_sparse"]
                  else "naive_sparse",
                  bytes_vs_minimum=float(np.sum(bytes_sent) / np.sum(bytes_min)),
                  capacity_per_destination=layout.capacities[0], retries=step.retries,
                  goals=dict(speedup_vs_naive=2.0, bytes_vs_minimum=1.25)))
    out.close()


if __name__ == "__main__":
    main()
