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
Reports step times (medians, interleaved) and exact exchange bytes; the last
line is the summary with ``speedup_vs_naive`` (over the faster naive variant)
and ``bytes_vs_minimum`` (forward row bytes sent, padding included, over the
minimum: each device's unique ids owned by other devices x dim x 4).
"""

from __future__ import annotations

import time

from experiments.cli import mesh_bench_parser, use_fake_devices


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "fewer steps (about 2 minutes)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--max-vocab", type=int, default=100_000)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    use_fake_devices(args.devices)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import NamedSharding, PartitionSpec as P

    import jax_hypereca as h
    from experiments.harness import JsonLines, environment
    from jax_hypereca.data import SyntheticConfig, SyntheticCriteo, default_vocab_sizes

    out = JsonLines(args.out)
    out.emit(environment())
    vocab = default_vocab_sizes(args.max_vocab)
    gen = SyntheticCriteo(SyntheticConfig(seed=0, vocab_sizes=vocab, alpha=1.05))
    steps = 12 if args.quick else 40
    warmup = 3
    D, B, F = args.dim, args.batch, len(vocab)
    lr, eps = 0.05, 1e-8
    mesh = h.make_mesh(axis_name="shard")
    W = mesh.shape["shard"]
    head = jax.random.normal(jax.random.PRNGKey(0), (F * D,), jnp.float32) / np.sqrt(F * D)

    def batches():
        for s in range(warmup + steps):
            _, ids, labels = gen.samples(s * B, B)
            yield ids[:, :, 0], labels

    data = list(batches())
    table_rows = sum(vocab)
    cfg = dict(devices=W, batch=B, dim=D, features=F, table_rows=table_rows, alpha=1.05,
               max_vocab=args.max_vocab, steps=steps)

    # ---------------------------------------------------------------- this design
    tables = [h.TableSpec(name=f"t{f}", dim=D, capacity=v,
                          optimizer=h.RowwiseAdagrad(learning_rate=lr, eps=eps))
              for f, v in enumerate(vocab)]
    feats = [h.FeatureSpec(name=f"f{f}", table=f"t{f}") for f in range(F)]
    coll = h.EmbeddingCollection(tables, feats, mesh=mesh, retune_every=4)

    def loss_fn(params, emb, batch):
        x = jnp.concatenate([emb[f"f{f}"] for f in range(F)], axis=1)
        return optax.sigmoid_binary_cross_entropy(x @ params["head"], batch["y"]).mean()

    fixed = optax.set_to_zero()
    step = coll.make_train_step(loss_fn, fixed)
    state = coll.init_train_state({"head": head}, fixed)

    def ours(state, ids, labels):
        return step(state, {"ids": {f"f{f}": ids[:, f] for f in range(F)}, "y": labels})

    # ---------------------------------------------------------------- naive JAX
    row_sharded = NamedSharding(mesh, P("shard", None))
    batch_sh = NamedSharding(mesh, P("shard"))
    padded = [int(np.ceil(v / W) * W) for v in vocab]

    def naive_tables():
        t = [jax.device_put(jnp.asarray(h.init_rows(0, np.arange(v), D, h.uniform(0.05))),
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
    nv = {"dense": naive_tables(), "sparse": naive_tables()}
    fns = {"dense": donate_dense, "sparse": donate_sparse}

    times = {"ours": [], "naive_dense": [], "naive_sparse": []}
    bytes_sent, bytes_min = [], []
    for s, (ids, labels) in enumerate(data):
        # interleaved, so machine noise hits every variant alike
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
        if s < warmup:
            continue
        times["ours"].append(t_ours)
        times["naive_dense"].append(tn["dense"])
        times["naive_sparse"].append(tn["sparse"])
        st = m["stats"]
        remote = sum(int(v["remote_unique"].sum()) for v in st.values())
        bytes_min.append(remote * D * 4)
        bytes_sent.append(W * m["bytes_per_step"]["rows"])
        out.emit(dict(bench="exchange_step", step=s, **cfg, seconds_ours=t_ours,
                      seconds_naive_dense=tn["dense"], seconds_naive_sparse=tn["sparse"],
                      rows_bytes_sent=bytes_sent[-1], rows_bytes_minimum=bytes_min[-1],
                      ids=sum(int(v["ids"].sum()) for v in st.values()),
                      unique_ids=sum(int(v["unique"].sum()) for v in st.values()),
                      remote_unique_ids=remote, loss=m["loss"]))
    med = {k: float(np.median(v)) for k, v in times.items()}
    best_naive = min(med["naive_dense"], med["naive_sparse"])
    for k, v in med.items():
        out.emit(dict(bench="exchange", variant=k, **cfg, seconds_median=v,
                      samples_per_s=B / v))
    layout = coll.layout(B)
    out.emit(dict(bench="exchange_summary", **cfg,
                  speedup_vs_naive=best_naive / med["ours"],
                  faster_naive="naive_dense" if med["naive_dense"] < med["naive_sparse"]
                  else "naive_sparse",
                  bytes_vs_minimum=float(np.sum(bytes_sent) / np.sum(bytes_min)),
                  capacity_per_destination=layout.capacities[0], retries=step.retries,
                  goals=dict(speedup_vs_naive=2.0, bytes_vs_minimum=1.25)))
    out.close()


if __name__ == "__main__":
    main()
