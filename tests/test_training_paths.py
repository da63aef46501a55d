"""The paths users train through, each against the independent reference of
sparse_reference.py: every fused optimizer (Adam's per-row step counts,
FTRL, row-wise Adagrad at FBGEMM's accumulator 0, a bfloat16 table), every
pooling mode with padding, ragged (Jagged) input, ids from the whole int64
range; eviction on, with exchange-overflow re-runs, table growth and batches
of changing size, counters exact after every step; and evaluation at any
batch size returning the trained rows (never zeros), identically."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.placement import make_mesh

import sparse_reference as sr
import test_collection as tc

B = 64
TX = optax.adam(0.01)
I64 = np.iinfo(np.int64)


# ----------------------------------------------------- optimizers, dtypes, ids
A_TABLES = [
    h.TableSpec(name="adam", dim=8, capacity=4096, optimizer=h.Adam(learning_rate=0.02),
                seed=11, initializer=h.uniform(0.2)),
    h.TableSpec(name="rw", dim=8, capacity=4096, optimizer=h.RowwiseAdagrad(learning_rate=0.05),
                seed=12, initializer=h.uniform(0.2)),
    h.TableSpec(name="ftrl", dim=4, capacity=4096,
                optimizer=h.FTRL(learning_rate=0.1, l1=0.001, l2=0.01), seed=13,
                initializer=h.uniform(0.2)),
    h.TableSpec(name="bf", dim=8, capacity=4096, optimizer=h.Adagrad(learning_rate=0.05),
                dtype=jnp.bfloat16, seed=14, initializer=h.uniform(0.2)),
]
A_FEATURES = [
    h.FeatureSpec(name="u", table="adam"),                                    # one-hot
    h.FeatureSpec(name="u_hist", table="adam", max_ids=4, pooling="mean"),    # Jagged, unweighted
    h.FeatureSpec(name="v", table="ftrl", max_ids=3, pooling="none"),         # none + padding
    h.FeatureSpec(name="w", table="rw", max_ids=2, weighted=True),            # weighted sum
    h.FeatureSpec(name="x", table="bf", max_ids=2),                           # sum + padding
]
A_WIDTH = 8 + 8 + 3 * 4 + 8 + 8 + 3


def a_head(params, emb, batch):
    feats = jnp.concatenate([emb["u"], emb["u_hist"], emb["v"].reshape(emb["v"].shape[0], -1),
                             emb["w"], emb["x"], batch["dense"]], axis=1)
    logits = feats @ params["w"] + params["c"]
    return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()


def a_params():
    return {"w": jax.random.normal(jax.random.PRNGKey(3), (A_WIDTH,)) * 0.1, "c": jnp.zeros(())}


def full_range_vocab(rng, n: int) -> np.ndarray:
    """`n` ids from the whole int64 range (the extremes and 0 and -3 among
    them), never the reserved -1 and -2."""
    ids = rng.integers(I64.min, I64.max, size=n, dtype=np.int64, endpoint=True)
    ids[:4] = [I64.min, I64.max, 0, -3]
    return np.unique(ids[(ids != h.PADDING_ID) & (ids != h.ERASED_KEY)])


def a_batches(steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vocab = {t.name: full_range_vocab(rng, 300) for t in A_TABLES}
    out = []

    def draw(table, shape, pad=0.0):
        v = vocab[table]
        ids = v[(rng.zipf(1.3, size=shape) - 1) % len(v)]
        return np.where(rng.random(shape) < pad, h.PADDING_ID, ids)

    for _ in range(steps):
        lengths = rng.integers(0, 5, size=B)  # some samples have no history at all
        hist = draw("adam", (int(lengths.sum()),))
        out.append({"ids": {"u": draw("adam", (B,)), "u_hist": h.Jagged(hist, lengths),
                            "v": draw("ftrl", (B, 3), 0.3), "w": draw("rw", (B, 2), 0.2),
                            "x": draw("bf", (B, 2), 0.3)},
                    "weights": {"w": rng.uniform(0.5, 2.0, (B, 2)).astype(np.float32)},
                    "dense": rng.normal(size=(B, 3)).astype(np.float32),
                    "y": (rng.random(B) < 0.3).astype(np.float32)})
    return out


def live_rows(state, name):
    """(keys, values f32, opt state) of every resident row of a table."""
    keys = np.asarray(state.tables[name].keys)
    live = (keys != h.EMPTY_KEY) & (keys != h.ERASED_KEY)  # ids may be negative
    vals = np.asarray(state.tables[name].values.astype(jnp.float32))[live]
    return keys[live], vals, np.asarray(state.tables[name].opt_state)[live]


def close(got, want, rel):
    return np.abs(got - want) <= rel * np.maximum(1.0, np.abs(want))


def test_every_optimizer_pooling_and_id_range_equals_the_reference():
    """30 steps on 8 devices: Adam, row-wise Adagrad (accumulator 0), FTRL
    and a bfloat16 Adagrad table; one-hot, Jagged unweighted mean, none with
    padding, weighted sum; ids over the whole int64 range."""
    batches = a_batches(30)
    ref = sr.Reference(A_TABLES, A_FEATURES, a_head, a_params(), TX, batches)
    coll = EmbeddingCollection(A_TABLES, A_FEATURES, mesh=make_mesh())
    step = coll.make_train_step(a_head, TX)
    state = coll.init_train_state(a_params(), TX)
    losses, ref_losses = [], []
    for b in batches:
        state, m = step(state, b)
        losses.append(m["loss"])
        ref_losses.append(ref.step(b))
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for k in ref.params:
        assert close(np.asarray(state.params[k]), np.asarray(ref.params[k]), 1e-5).all(), k
    for spec in A_TABLES:
        keys, vals, opt = live_rows(state, spec.name)
        assert set(keys.tolist()) == set(ref.vocab[spec.name].tolist())  # every id, one home
        assert len(np.unique(keys)) == len(keys)
        want_v, want_s = ref.rows(spec.name, keys)
        if spec.dtype == jnp.bfloat16:
            # one bfloat16 rounding apart at most (float32 sums in another order)
            ulp = np.abs(want_v) * 2.0 ** -7 + 1e-30
            assert (np.abs(vals - want_v) <= ulp).all(), spec.name
            assert (vals == want_v).mean() > 0.97, spec.name
            assert close(opt, want_s, 1e-2).all(), spec.name
        else:
            assert close(vals, want_v, 1e-5).all(), spec.name
            assert close(opt, want_s, 1e-5).all(), spec.name
    adam_t = live_rows(state, "adam")[2][:, -1]
    assert adam_t.min() >= 1 and adam_t.max() > adam_t.min()  # per-row step counts differ
    assert {int(I64.min), int(I64.max), 0, -3} <= set(live_rows(state, "adam")[0].tolist())
    stats = coll.table_stats(state.tables)
    assert all(s["evicted"] == 0 and s["inserted"] == s["size"] for s in stats.values())


# ------------------------------------------- eviction, overflow, growth, sizes
B_SPECS = [h.TableSpec(name=n, dim=tc.DIMS[n], capacity=c, optimizer=tc.OPTS["adagrad"][0],
                       seed=7 + i, initializer=h.uniform(0.2), policy=p)
           for i, (n, c, p) in enumerate([("a", 128, "lru"), ("b", 128, "lfu"),
                                          ("c", 64, "lru")])]


def b_batches():
    """Batches of 64, a last partial one of 32, then 128 (two joined)."""
    base = tc.make_batches(seed=3, steps=44)
    cut = lambda b, n: jax.tree.map(lambda x: x[:n], b)
    join = lambda p, q: jax.tree.map(lambda x, y: np.concatenate([x, y]), p, q)
    return base[:30] + [cut(base[30], 32)] + [join(base[31 + 2 * i], base[32 + 2 * i])
                                              for i in range(6)] + [cut(base[43], 32)]


def live_keys(state, name) -> set:
    k = np.asarray(state.tables[name].keys)
    return set(k[k >= 0].tolist())


@pytest.fixture(scope="module")
def evicting_run():
    """Small tables with eviction on, tiny first exchange capacities (re-runs),
    a memory cap that lets each table grow before it must evict, changing
    batch sizes; the reference resets every id the run evicts."""
    batches = b_batches()
    ref = sr.Reference(B_SPECS, tc.FEATURES, tc.head_loss, tc.init_params(), TX, batches)
    coll = EmbeddingCollection(B_SPECS, tc.FEATURES, mesh=make_mesh(), capacity_slack=0.5,
                               capacities={"a": 1, "b": 2, "c": 1}, retune_every=5,
                               max_shard_bytes=7000)
    step = coll.make_train_step(tc.head_loss, TX)
    state = coll.init_train_state(tc.init_params(), TX)
    log = {"evicted": 0, "returned": 0, "grew": set()}
    gone: dict[str, set] = {n: set() for n in tc.DIMS}
    before = {n: set() for n in tc.DIMS}
    rows0 = {n: state.tables[n].keys.shape[0] for n in tc.DIMS}
    for b in batches:
        state, m = step(state, b)
        want_loss = ref.step(b)
        assert m["loss"] == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
        stats = coll.table_stats(state.tables)
        for n in tc.DIMS:
            after = live_keys(state, n)
            evicted, new = before[n] - after, after - before[n]
            used = set()
            for f in tc.FEATURES:
                if f.table == n:
                    used |= set(np.asarray(b["ids"][f.name]).reshape(-1).tolist())
            assert not evicted & used  # the step's own ids are pinned
            log["returned"] += len(new & gone[n])
            gone[n] = (gone[n] | evicted) - after
            ref.reset(n, sorted(evicted))  # an evicted id that returns starts afresh
            log["evicted"] += len(evicted)
            c = stats[n]
            assert c["size"] == len(after)
            assert c["inserted"] + c["moved_in"] == c["size"] + c["evicted"] + c["erased"] + \
                c["moved_out"]
            if state.tables[n].keys.shape[0] > rows0[n]:
                log["grew"].add(n)
            before[n] = after
        totals = {n: (stats[n]["inserted"], stats[n]["evicted"]) for n in tc.DIMS}
        log.setdefault("totals", []).append(totals)
    return coll, step, state, ref, log, batches


def test_eviction_overflow_growth_and_partial_batches_equal_the_reference(evicting_run):
    coll, step, state, ref, log, batches = evicting_run
    assert log["evicted"] > 0 and log["returned"] > 0, log
    assert log["grew"], log  # some table doubled before evicting
    assert step.retries > 0  # exchange overflows (and growth) re-ran steps
    assert int(state.step) == len(batches)
    final = coll.table_stats(state.tables)
    assert sum(s["evicted"] for s in final.values()) == log["evicted"]
    for i, n in enumerate(tc.DIMS):
        keys, vals, opt = live_rows(state, n)
        assert len(np.unique(keys)) == len(keys)
        per_shard = np.asarray(state.tables[n].keys).reshape(8, -1)
        for s in range(8):
            k = per_shard[s][per_shard[s] >= 0]
            assert (h.owner_of(k, 8) == s).all()
        want_v, want_s = ref.rows(n, keys)
        assert close(vals, want_v, 1e-5).all(), n
        assert close(opt, want_s, 1e-5).all(), n
    for k in ref.params:
        assert close(np.asarray(state.params[k]), np.asarray(ref.params[k]), 1e-5).all(), k


def expected_embeddings(ref: sr.Reference, state, batch) -> dict[str, np.ndarray]:
    """What evaluation must return: resident rows as trained, any other id
    its initial row, pooled as the features say (numpy)."""
    out = {}
    for f in tc.FEATURES:
        spec = ref.specs[f.table]
        ids = np.asarray(batch["ids"][f.name], np.int64).reshape(len(batch["y"]), -1)
        live = np.isin(ids, list(live_keys(state, f.table)))
        rows = np.zeros(ids.shape + (spec.dim,), np.float32)
        if live.any():
            rows[live] = ref.rows(f.table, ids[live])[0]
        fresh = ~live & (ids != h.PADDING_ID)
        rows[fresh] = h.init_rows(spec.seed, ids[fresh], spec.dim, spec.initializer)
        w = (ids != h.PADDING_ID).astype(np.float32)
        if f.weighted:
            w = w * batch["weights"][f.name]
        r = rows * w[..., None]
        if f.pooling == "none":
            out[f.name] = r
        elif f.pooling == "sum":
            out[f.name] = r.sum(axis=1)
        else:
            den = w.sum(axis=1, keepdims=True)
            out[f.name] = np.where(den > 0, r.sum(axis=1) / np.where(den > 0, den, 1), 0)
    return out


def test_eval_at_any_batch_size_returns_the_trained_rows(evicting_run):
    """After capacity re-fits to a 64-sample train batch: evaluating 512
    samples at 8, 64 and 512 per call, and at sizes changing call to call,
    gives bit-identical embeddings (the trained rows of the reference, never
    zeros) and the same logits."""
    coll, _, state, ref, _, _ = evicting_run
    pool = tc.make_batches(seed=9, steps=8)
    pool[3]["ids"]["fa"] = np.full((B,), 10**15 + 3, np.int64)  # never seen: initial rows
    samples = jax.tree.map(lambda *x: np.concatenate(x), *pool)

    def predict(p, emb, batch):
        feats = jnp.concatenate([emb["fa"], emb["fa3"], emb["fb"],
                                 emb["fc"].reshape(emb["fc"].shape[0], -1), batch["x"]], axis=1)
        return {"emb": emb, "logits": feats @ p["w"] + p["c"]}

    fn = coll.make_eval_fn(predict)
    before = coll.table_stats(state.tables)

    def run(sizes):
        assert sum(sizes) == 8 * B
        starts = np.cumsum([0] + sizes)
        parts = [fn(state, jax.tree.map(lambda x: x[a:a + n], samples))
                 for a, n in zip(starts, sizes)]
        return jax.tree.map(lambda *x: np.concatenate([np.asarray(a) for a in x]), *parts)

    want = run([B] * 8)  # one training-sized batch at a time
    for name, e in expected_embeddings(ref, state, samples).items():
        assert close(want["emb"][name], e, 1e-5).all(), name
    assert np.abs(want["emb"]["fa"]).min() > 0  # no zero rows
    for sizes in ([8] * 64, [8 * B], [8] * 4 + [B] * 7 + [8] * 4):  # 1/8x, 8x, changing
        got = run(sizes)
        for name in want["emb"]:
            np.testing.assert_array_equal(got["emb"][name], want["emb"][name], err_msg=name)
        # the embeddings are bit-identical; the head's dot may round differently per
        # batch size (XLA:CPU picks its dot kernel by shape): a float32 ulp
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=0, atol=1e-6)
    assert fn.reruns > 0  # the first 8x call overflowed its first capacity and re-ran
    assert coll.table_stats(state.tables) == before  # nothing inserted or evicted


def test_eval_rejects_reserved_ids_in_device_inputs(evicting_run):
    coll, _, state, _, _, _ = evicting_run
    b = tc.make_batches(seed=5, steps=1)[0]
    bad = b["ids"]["fb"].copy()
    bad[3, 0] = h.ERASED_KEY
    ids = {**b["ids"], "fb": jax.device_put(h.ids_array(bad), coll.batch_sharding)}
    with pytest.raises(h.ReservedIdError, match="evaluation: table 'b': 1 of .* reserved"):
        coll.make_eval_fn(lambda p, emb, batch: emb)(state, {**b, "ids": ids})


def test_scores_count_steps_whatever_the_mesh_or_fold():
    """last_step and freq of every row after 6 steps on one device and on 8
    devices with a hot fold (scored as the cold fold scores its rows; the
    8-device cold fold alone: test_checkpoint), so LRU/LFU evict the same
    rows on any mesh."""
    batches = tc.make_batches(seed=4, steps=6)

    def scores(devices, hot=None):
        coll = EmbeddingCollection(tc.table_specs(h.SGD(learning_rate=0.1)), tc.FEATURES,
                                   mesh=make_mesh(jax.devices()[:devices]))
        step = coll.make_train_step(tc.head_loss, TX)
        state = coll.init_train_state(tc.init_params(), TX)
        if hot:
            state = h.replication.apply_plan(coll, state, hot)
        for b in batches:
            state, _ = step(state, b)
        out = {}
        for n in tc.DIMS:
            folds = [state.tables[n]] + ([state.hot[n]] if n in state.hot else [])
            for st in folds:
                k, last, freq = (np.asarray(getattr(st, f)) for f in ("keys", "last_step", "freq"))
                live = k >= 0
                out.update({(n, int(i)): (int(a), int(b))
                            for i, a, b in zip(k[live], last[live], freq[live])})
        return out

    one = scores(1)
    assert max(f for _, f in one.values()) == 6 and len({f for _, f in one.values()}) > 2
    assert scores(8, hot={"a": np.arange(12), "c": np.arange(5)}) == one
