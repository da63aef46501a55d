"""A fixed 50-step workload whose result is recorded once and then must not
change: the guard that a refactor of the middle layers (exchange, placement,
hot fold, training path) keeps every parameter bit for bit.

The recording, tests/data/golden_step50.npz, was made by the code *before* the
middle-layer refactor (issue 12) with

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        .venv/bin/python tests/golden_workload.py tests/data/golden_step50.npz

Never re-record it to make a test pass: a difference is a behaviour change.

The workload: 8 devices; three tables (Adagrad with LRU eviction, row-wise
Adagrad with LFU eviction, Adam) small enough to evict, first exchange
capacities of one id so steps overflow and re-run, a capacity re-fit every 7
steps, a hot fold on two tables planned at step 0 and re-planned at step 25,
and a dense linear head trained with optax.adam."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jax_hypereca as h

B, STEPS, REPLAN_AT = 64, 50, 25
VOCAB = {"a": 600, "b": 90, "c": 200}
TABLES = [
    h.TableSpec(name="a", dim=8, capacity=256, optimizer=h.Adagrad(learning_rate=0.05),
                policy="lru", seed=21, initializer=h.uniform(0.2)),
    h.TableSpec(name="b", dim=4, capacity=64, optimizer=h.RowwiseAdagrad(learning_rate=0.05),
                policy="lfu", seed=22, initializer=h.uniform(0.2)),
    h.TableSpec(name="c", dim=8, capacity=256, optimizer=h.Adam(learning_rate=0.01),
                seed=23, initializer=h.normal(0.1)),
]
FEATURES = [
    h.FeatureSpec(name="fa", table="a"),
    h.FeatureSpec(name="fa3", table="a", max_ids=3, weighted=True, pooling="mean"),
    h.FeatureSpec(name="fb", table="b", max_ids=3, pooling="sum"),
    h.FeatureSpec(name="fc", table="c", max_ids=2, pooling="none"),
]
WIDTH = 8 + 8 + 4 + 2 * 8 + 3
HOT = {0: {"a": np.arange(10), "c": np.arange(6)},
       REPLAN_AT: {"a": np.arange(20), "c": np.arange(0)}}
TX = optax.adam(0.01)


def batches(seed: int = 5) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        fa3 = rng.zipf(1.2, size=(B, 3)) % VOCAB["a"]
        fa3[rng.random((B, 3)) < 0.3] = h.PADDING_ID
        fb = rng.integers(0, VOCAB["b"], size=(B, 3))
        fb[rng.random((B, 3)) < 0.25] = h.PADDING_ID
        out.append({"ids": {"fa": (rng.zipf(1.3, size=B) % VOCAB["a"]).astype(np.int64),
                            "fa3": fa3.astype(np.int64), "fb": fb.astype(np.int64),
                            "fc": (rng.zipf(1.3, size=(B, 2)) % VOCAB["c"]).astype(np.int64)},
                    "weights": {"fa3": rng.uniform(0.5, 2.0, (B, 3)).astype(np.float32)},
                    "x": rng.normal(size=(B, 3)).astype(np.float32),
                    "y": (rng.random(B) < 0.3).astype(np.float32)})
    return out


def head_loss(params, emb, batch):
    feats = jnp.concatenate([emb["fa"], emb["fa3"], emb["fb"],
                             emb["fc"].reshape(emb["fc"].shape[0], -1), batch["x"]], axis=1)
    logits = feats @ params["w"] + params["c"]
    return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()


def init_params():
    return {"w": jax.random.normal(jax.random.PRNGKey(4), (WIDTH,)) * 0.1, "c": jnp.zeros(())}


def run(depth: int | None = None, route_ahead: bool | None = None,
        mesh=None) -> dict[str, np.ndarray]:
    """The workload's result: losses, dense parameters, every live row of
    every table and hot fold (sorted by id) and the counters. With `depth`
    the steps run through a TrainPipeline of that depth (flushed before
    each re-plan), else one synchronous call each."""
    mesh = mesh or h.make_mesh()
    coll = h.EmbeddingCollection(TABLES, FEATURES, mesh=mesh,
                                 capacities={"a": 1, "b": 1, "c": 1}, retune_every=7,
                                 max_shard_bytes=11000 * 8 // mesh.size,  # the recording's: 8
                                 capacity_slack=0.5)
    step = coll.make_train_step(head_loss, TX)
    pipe = h.TrainPipeline(step, depth=depth, route_ahead=route_ahead) if depth else None
    state = coll.init_train_state(init_params(), TX)
    losses = []
    for i, b in enumerate(batches()):
        if i in HOT:
            state = pipe.flush(state) if pipe else state
            state = h.replication.apply_plan(coll, state, HOT[i])
        if pipe:
            state = pipe.submit(state, b)
            continue
        state, m = step(state, b)
        losses.append(np.float32(m["loss"]))
    if pipe:
        state = pipe.flush(state)
        done = pipe.pop_completed()
        assert [m["step"] for m in done] == list(range(1, STEPS + 1)), "reordered or skipped"
        losses = [np.float32(m["loss"]) for m in done]
    out = {"losses": np.asarray(losses), "w": np.asarray(state.params["w"]),
           "c": np.asarray(state.params["c"])}
    if pipe:  # steps whose ids the step before routed (not in the recording)
        out["routed_ahead"] = np.asarray(step.routed_ahead)
    for spec in TABLES:
        for fold, table in (("cold", state.tables.get(spec.name)),
                            ("hot", state.hot.get(spec.name))):
            if table is not None:
                out.update(_live(f"{spec.name}/{fold}", table, replicated=fold == "hot"))
    return out


def _live(prefix: str, table, *, replicated: bool) -> dict[str, np.ndarray]:
    """Live rows sorted by id (a replicated fold: its first replica) and the
    counters summed over shards."""
    host = {f: np.asarray(x.addressable_shards[0].data if replicated else x)
            for f, x in table._asdict().items()}
    keys = host["keys"]
    live = np.flatnonzero((keys != h.EMPTY_KEY) & (keys != h.ERASED_KEY))
    order = live[np.argsort(keys[live], kind="stable")]
    out = {f"{prefix}/{f}": host[f][order].astype(np.float32) if f == "values"
           else host[f][order] for f in h.Rows._fields}
    out[f"{prefix}/counters"] = host["counters"].reshape(-1, 16).sum(0)  # NUM_COUNTERS
    return out


if __name__ == "__main__":
    np.savez_compressed(sys.argv[1], **run())
    print(f"recorded {sys.argv[1]}")
