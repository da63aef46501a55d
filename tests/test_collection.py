"""I2 on a device mesh: the sharded collection trained for 100 steps equals an
independent single-device reference written in plain jnp + optax."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.features import FeatureSpec, Jagged
from jax_hypereca.placement import make_mesh
from conftest import slow_case

V = {"a": 400, "b": 60, "c": 120}
DIMS = {"a": 8, "b": 4, "c": 8}
B = 64
STEPS = 100
FEATURES = [
    FeatureSpec(name="fa", table="a"),                                   # one-hot, sum
    FeatureSpec(name="fa3", table="a", max_ids=3, weighted=True, pooling="mean"),
    FeatureSpec(name="fb", table="b", max_ids=3, pooling="sum"),          # multi-hot + padding
    FeatureSpec(name="fc", table="c", max_ids=2, pooling="none"),
]
IN_DIM = 8 + 8 + 4 + 2 * 8 + 3


def table_specs(opt):
    return [h.TableSpec(name=n, dim=DIMS[n], capacity=2048, optimizer=opt, seed=7 + i,
                        initializer=h.uniform(0.2)) for i, n in enumerate(DIMS)]


def make_batches(seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        fa = rng.zipf(1.4, size=B) % V["a"]
        fa3 = rng.zipf(1.2, size=(B, 3)) % V["a"]
        fa3[rng.random((B, 3)) < 0.3] = h.PADDING_ID
        w3 = rng.uniform(0.5, 2.0, size=(B, 3)).astype(np.float32)
        fb = rng.integers(0, V["b"], size=(B, 3))
        fb[rng.random((B, 3)) < 0.25] = h.PADDING_ID
        fc = rng.zipf(1.3, size=(B, 2)) % V["c"]
        x = rng.normal(size=(B, 3)).astype(np.float32)
        y = (rng.random(B) < 0.3).astype(np.float32)
        out.append({"ids": {"fa": fa.astype(np.int64), "fa3": fa3.astype(np.int64),
                            "fb": fb.astype(np.int64), "fc": fc.astype(np.int64)},
                    "weights": {"fa3": w3}, "x": x, "y": y})
    return out


def init_params():
    return {"w": jax.random.normal(jax.random.PRNGKey(1), (IN_DIM,)) * 0.1, "c": jnp.zeros(())}


def head_loss(params, emb, batch):
    feats = jnp.concatenate([emb["fa"], emb["fa3"], emb["fb"],
                             emb["fc"].reshape(emb["fc"].shape[0], -1), batch["x"]], axis=1)
    logits = feats @ params["w"] + params["c"]
    return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()


def reference(batches, table_tx, dense_tx, admitted=None, vocab=None):
    """Plain jnp + optax on one device; dense tables indexed by id (ids in
    [0, vocab[table]), default V). With `admitted` (per step, per table a
    bool array over the vocabulary) an id not admitted that step looks up a
    zero row and so gets no gradient."""
    vocab = vocab or V
    tables = {n: jnp.asarray(h.init_rows(7 + i, np.arange(vocab[n]), DIMS[n], h.uniform(0.2)))
              for i, n in enumerate(DIMS)}
    params = init_params()
    opt_t = {n: table_tx.init(t) for n, t in tables.items()}
    opt_p = dense_tx.init(params)

    def rows(table, ids, admit):
        valid = (ids >= 0)[..., None]
        read = valid & admit[jnp.maximum(ids, 0)][..., None]
        return jnp.where(read, table[jnp.maximum(ids, 0)], 0.0), valid.astype(jnp.float32)

    @jax.jit
    def step(params, tables, opt_p, opt_t, batch):
        def loss(params, tables):
            ids, adm = batch["ids"], batch["admitted"]
            ra, _ = rows(tables["a"], ids["fa"], adm["a"])
            r3, m3 = rows(tables["a"], ids["fa3"], adm["a"])
            w3 = m3 * batch["weights"]["fa3"][..., None]
            den = w3.sum(axis=1)
            mean3 = jnp.where(den > 0, (r3 * w3).sum(axis=1) / jnp.where(den > 0, den, 1), 0)
            rb, _ = rows(tables["b"], ids["fb"], adm["b"])
            rc, _ = rows(tables["c"], ids["fc"], adm["c"])
            emb = {"fa": ra, "fa3": mean3, "fb": rb.sum(axis=1), "fc": rc}
            return head_loss(params, emb, batch)
        l, (gp, gt) = jax.value_and_grad(loss, argnums=(0, 1))(params, tables)
        up, opt_p = dense_tx.update(gp, opt_p, params)
        params = optax.apply_updates(params, up)
        new_t, new_o = {}, {}
        for n in tables:
            u, new_o[n] = table_tx.update(gt[n], opt_t[n], tables[n])
            new_t[n] = optax.apply_updates(tables[n], u)
        return params, new_t, opt_p, new_o, l

    losses = []
    everyone = {n: np.ones(vocab[n], bool) for n in vocab}
    for i, b in enumerate(batches):
        jb = {"ids": {k: jnp.asarray(v, jnp.int32) for k, v in b["ids"].items()},
              "weights": b["weights"], "x": b["x"], "y": b["y"],
              "admitted": everyone if admitted is None else admitted[i]}
        params, tables, opt_p, opt_t, l = step(params, tables, opt_p, opt_t, jb)
        losses.append(float(l))
    return params, tables, losses


OPTS = {
    "adagrad": (h.Adagrad(learning_rate=0.05),
                optax.adagrad(0.05, initial_accumulator_value=0.1, eps=1e-7)),
    "sgd": (h.SGD(learning_rate=0.3), optax.sgd(0.3)),
}


@pytest.fixture(scope="module")
def batches():
    return make_batches()


@pytest.fixture(scope="module")
def ref_adagrad(batches):
    return reference(batches, OPTS["adagrad"][1], optax.adam(0.01))


def train(shards, batches, opt, *, steps=STEPS):
    coll = EmbeddingCollection(table_specs(opt), FEATURES,
                               mesh=make_mesh(jax.devices()[:shards]))
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    losses = []
    for b in batches[:steps]:
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    return coll, step, state, losses


def assert_equivalent(state, losses, ref, *, require_rows=True):
    ref_params, ref_tables, ref_losses = ref
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for k in ref_params:
        a, r = np.asarray(state.params[k]), np.asarray(ref_params[k])
        assert (np.abs(a - r) <= 1e-5 * np.maximum(1, np.abs(r))).all(), k
    for n in DIMS:
        keys = np.asarray(state.tables[n].keys)
        vals = np.asarray(state.tables[n].values)
        live = keys >= 0
        assert live.sum() > 0 or not require_rows
        ref = np.asarray(ref_tables[n])[keys[live]]
        assert (np.abs(vals[live] - ref) <= 1e-5 * np.maximum(1, np.abs(ref))).all(), n
        # one home per id (I1): no key on two shards
        assert len(np.unique(keys[live])) == live.sum()


@pytest.mark.parametrize("shards", [1, pytest.param(2, marks=slow_case), pytest.param(4, marks=slow_case), 8])
def test_sharded_training_equals_dense_reference(shards, batches, ref_adagrad):
    coll, step, state, losses = train(shards, batches, OPTS["adagrad"][0])
    assert_equivalent(state, losses, ref_adagrad)
    per_shard = np.asarray(state.tables["a"].keys).reshape(shards, -1)
    for s in range(shards):
        k = per_shard[s][per_shard[s] >= 0]
        assert (h.owner_of(k, shards) == s).all()
    stats = coll.table_stats(state.tables)
    assert all(v["evicted"] == 0 for v in stats.values())
    assert losses[-1] < losses[0]


def test_sharded_sgd_equals_reference(batches):
    ref = reference(batches[:30], OPTS["sgd"][1], optax.adam(0.01))
    _, _, state, losses = train(8, batches, OPTS["sgd"][0], steps=30)
    assert_equivalent(state, losses, ref)


def collective_ops(hlo: str) -> list[tuple[str, str]]:
    """(op, result shape) of every collective instruction in compiled HLO."""
    import re
    out = []
    for line in hlo.splitlines():
        m = re.match(r"\s*%[\w.\-]+ = (.+?) (all-to-all|all-reduce|all-gather|reduce-scatter|"
                     r"collective-permute)(?:-start)?\(", line)
        if m:
            out.append((m.group(2), m.group(1)))
    return out


def test_compiled_step_holds_exactly_the_designed_collectives(batches):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    batch = coll.prepare_batch(batches[0])
    layout = coll.layout(B)
    ops = collective_ops(step.lower(state, batch).compile().as_text())
    kinds = [k for k, _ in ops]
    # per exchange group: ids out + rows back (forward), gradients out (backward)
    assert len(layout.groups) == 2
    assert kinds.count("all-to-all") == 3 * len(layout.groups)
    assert "all-gather" not in kinds and "reduce-scatter" not in kinds
    # the overflow flag (one scalar max) and the dense data-parallel gradient sum;
    # nothing table-sized is all-reduced
    reduces = [shape for k, shape in ops if k == "all-reduce"]
    assert any(shape == "s32[]" for shape in reduces)
    table_rows = {str(s.shard_geometry(8)[0]) for s in table_specs(h.SGD())}
    assert not any(r in shape for shape in reduces for r in table_rows), reduces
    # the pooling's transpose: one row scatter-add per round of features (round
    # k = the k-th feature of each table): fa + fc, then fa3 in group (a, c);
    # fb in group (b,). Autodiff made one (unique ids, dim) buffer per feature.
    hlo = step.lower(state, batch).compile().as_text()
    adds = re.findall(r"= f32\[(\d+),(\d+)\]\{[^}]*\} scatter\(", hlo)
    assert sorted(int(d) for _, d in adds) == [4, 8, 8], adds


def test_a_pipelined_step_routes_the_next_batch_in_its_own_program(batches):
    """B1(t+1) beside C(t) (pipeline.py): the pipeline's program gets its
    batch's ids routed, yet holds the same collectives as the step that
    routes its own -- one id exchange per group (int64 blocks) and its
    overflow vote, there the next batch's; the route program holds exactly
    those. XLA may combine collectives, so their operands are compared."""
    import collections
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    batch, following = coll.prepare_batch(batches[0]), coll.prepare_batch(batches[1])

    def operands(lowered):
        ops = collective_ops(lowered.compile().as_text())
        return {kind: collections.Counter(s for k, shape in ops if k == kind
                                          for s in re.findall(r"[a-z]+\d*\[[\d,]*\]", shape))
                for kind in ("all-to-all", "all-reduce")}

    own, split = operands(step.lower(state, batch)), operands(step.lower(state, batch, following))
    route = operands(jax.jit(coll.route_fn(coll.layout(B))).lower(
        state.hot, coll.device_batch(batch)["ids"]))
    assert split == own
    # (one block per destination) per group: (id, tag) pairs, its capacity each
    assert set(route["all-to-all"]) == {f"s64[1,{cap},2]" for cap in coll.layout(B).capacities}
    assert route["all-reduce"] == collections.Counter({"s32[]": 1})
    assert not route["all-to-all"] - own["all-to-all"]


def test_capacity_overflow_is_rerun_without_double_apply(batches, ref_adagrad):
    coll = EmbeddingCollection(table_specs(OPTS["adagrad"][0]), FEATURES,
                               mesh=make_mesh(), capacities={"a": 1, "b": 2, "c": 1},
                               retune_every=7)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    losses = []
    for b in batches:
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    assert step.retries >= 1  # capacities were raised (and shrunk by the re-fits)
    assert int(state.step) == STEPS
    assert_equivalent(state, losses, ref_adagrad)


def test_step_reports_exact_exchange_counts(batches):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.sgd(0.1)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    b = batches[0]
    state, m = step(state, b)
    st = m["stats"]["a"]
    local = np.concatenate([b["ids"]["fa"][:, None], b["ids"]["fa3"]], axis=1).reshape(8, -1)
    for d in range(8):
        ids = local[d][local[d] >= 0]
        uniq = np.unique(ids)
        assert st["ids"][d] == ids.size and st["unique"][d] == uniq.size
        assert st["remote_unique"][d] == (h.owner_of(uniq, 8) != d).sum()
    # per-destination counts are per exchange group (tables a and c together)
    for d in range(8):
        counts = np.zeros(8, int)
        a_ids = local[d][local[d] >= 0]
        c_ids = b["ids"]["fc"].reshape(8, -1)[d]
        for u in (np.unique(a_ids), np.unique(c_ids[c_ids >= 0])):
            counts += np.bincount(h.owner_of(u, 8), minlength=8)
        assert st["max_count"][d] == counts.max()
    layout = coll.layout(B)
    assert layout.groups == (("a", "c"), ("b",))
    assert m["bytes_per_step"]["ids"] == 7 * sum(layout.capacities) * 16


def assert_lookup_counts(stats, batches, shards, hot=None):
    """Each step's queries/hits (distinct ids) and lookups/lookup_hits
    (positions, duplicates counted) per owner and table equal a dict count:
    with rows for every id, an id hits once an earlier step looked it up.
    `hot`: per table the ids of a replicated hot fold (never counted)."""
    seen = {t: set() for t in DIMS}
    for st, b in zip(stats, batches):
        for t in DIMS:
            ids = np.concatenate([b["ids"][f.name].reshape(-1) for f in FEATURES
                                  if f.table == t])
            ids = ids[(ids != h.PADDING_ID) & ~np.isin(ids, list((hot or {}).get(t, ())))]
            known = np.isin(ids, list(seen[t]))
            owner = h.owner_of(ids, shards)
            for d in range(shards):
                mine = owner == d
                want = (len(np.unique(ids[mine])), len(np.unique(ids[mine & known])),
                        int(mine.sum()), int((mine & known).sum()))
                got = tuple(int(st[t][k][d]) for k in ("queries", "hits", "lookups",
                                                        "lookup_hits"))
                assert got == want, (t, d)
            seen[t].update(ids.tolist())


@pytest.mark.parametrize("shards", [1, 8])
def test_step_counts_lookups_and_hits_against_a_dict(batches, shards):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES,
                               mesh=make_mesh(jax.devices()[:shards]))
    step = coll.make_train_step(head_loss, optax.sgd(0.1))
    state = coll.init_train_state(init_params(), optax.sgd(0.1))
    stats = []
    for b in batches[:4]:
        state, m = step(state, b)
        stats.append(m["stats"])
    assert_lookup_counts(stats, batches, shards)


def test_bad_inputs_raise_before_dispatch(batches):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.sgd(0.1)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    good = batches[0]

    def with_ids(**kw):
        return dict(good, ids={**good["ids"], **kw})

    with pytest.raises(ValueError, match=r"ids must have shape \[B, 3\]"):
        step(state, with_ids(fb=np.zeros((B, 4), np.int64)))
    bad = good["ids"]["fb"].copy()
    bad[5, 1] = h.ERASED_KEY
    with pytest.raises(h.ReservedIdError, match=r"\[5, 1\] = -2"):
        step(state, with_ids(fb=bad))
    with pytest.raises(ValueError, match="does not split over 8 devices"):
        step(state, {**good, "ids": {k: v[:60] for k, v in good["ids"].items()},
                     "weights": {"fa3": good["weights"]["fa3"][:60]}})
    with pytest.raises(ValueError, match="unknown feature 'zz'"):
        step(state, with_ids(zz=good["ids"]["fa"]))
    with pytest.raises(ValueError, match="weighted: give weights"):
        step(state, {**good, "weights": {}})
    with pytest.raises(ValueError, match="negative length -1 for sample 1"):
        step(state, with_ids(fb=Jagged(np.arange(3), np.array([2, -1, 2]))))
    with pytest.raises(ValueError, match="sample 0 has 4 ids, more than max_ids=3"):
        step(state, with_ids(fb=Jagged(np.arange(4), np.array([4] + [0] * (B - 1)))))
    with pytest.raises(ValueError, match="names unknown table 'nope'"):
        EmbeddingCollection(table_specs(h.SGD()), [FeatureSpec(name="x", table="nope")])
    # nothing was dispatched: the state is intact and still usable
    state, _ = step(state, good)
    assert int(state.step) == 1


def test_reserved_id_in_device_input_is_reported_after_the_step(batches):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.sgd(0.1)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    state, _ = step(state, batches[0])
    bad = batches[1]["ids"]["fb"].copy()
    bad[0, 0] = h.ERASED_KEY
    ids = {**batches[1]["ids"], "fb": jax.device_put(h.ids_array(bad), coll.batch_sharding)}
    with pytest.raises(h.ReservedIdError, match="reserved ERASED_KEY") as err:
        step(state, {**batches[1], "ids": ids})
    assert int(err.value.state.step) == 2  # the step ran; the bad id got no row


def test_nonfinite_gradients_skip_rows_and_raise_after_the_step(batches):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.sgd(0.1)

    def nan_on_fb(params, emb, batch):  # d loss / d emb["fb"] is NaN, the rest finite
        return head_loss(params, emb, batch) + jnp.sum(emb["fb"] * jnp.nan)

    step = coll.make_train_step(nan_on_fb, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    with pytest.raises(h.NonFiniteGradientError, match="table 'b': .* gradient rows held NaN"
                       ) as err:
        step(state, batches[0])
    after = err.value.state
    assert int(after.step) == 1
    # table b's new rows kept their initial values; table a's rows were trained
    for i, n in enumerate(DIMS):
        keys = np.asarray(after.tables[n].keys).reshape(-1)
        vals = np.asarray(after.tables[n].values).reshape(keys.size, -1)
        live = keys >= 0
        init = h.init_rows(7 + i, keys[live], DIMS[n], h.uniform(0.2))
        same = (vals[live] == init).all(axis=1)
        assert same.all() if n == "b" else not same.all(), n
    nonfinite = h.COUNTER_NAMES["nonfinite_grads"]
    assert int(np.asarray(after.tables["b"].counters)[..., nonfinite].sum()) > 0


def test_ragged_input_equals_padded(batches):
    b = batches[0]
    fb = b["ids"]["fb"]
    lengths = (fb >= 0).sum(axis=1)
    values = np.concatenate([row[row >= 0] for row in fb])
    ids, w = h.features.jagged_to_padded(Jagged(values, lengths), 3)
    # same ids per sample (padding moves to the end; sum pooling is order-free)
    for row_a, row_b in zip(ids, fb):
        assert sorted(row_a[row_a >= 0]) == sorted(row_b[row_b >= 0])
    assert w is None


@pytest.mark.parametrize("one_transfer", [True, False])
def test_prepare_batch_places_every_array_bit_for_bit_with_its_dtype(batches, monkeypatch,
                                                                      one_transfer):
    """prepare_batch on 8 devices: ids over the whole int64 range stay int64,
    every other per-sample array keeps its dtype (float64, uint8, bool, in
    nested dicts), non-batch values pass through, and each lands split over
    the batch axis -- through the one batched transfer and through the
    per-device path it falls back to (a jax without ``jax.enable_x64``)."""
    if one_transfer:  # the per-device path must not run
        monkeypatch.setattr(jax, "make_array_from_callback",
                            lambda *a, **k: pytest.fail("per-device transfer"))
    else:
        monkeypatch.delattr(jax, "enable_x64")
    coll = EmbeddingCollection(table_specs(OPTS["adagrad"][0]), FEATURES,
                               mesh=make_mesh(jax.devices()[:8]))
    rng = np.random.default_rng(4)
    b = dict(batches[0], ids=dict(batches[0]["ids"]))
    b["ids"]["fb"] = rng.integers(-(2**63), 2**63 - 1, size=(B, 3), dtype=np.int64)
    b["ids"]["fb"][b["ids"]["fb"] < -(2**62)] = h.PADDING_ID
    b["extra"] = {"x64": rng.normal(size=(B, 2)), "flag": rng.random(B) < 0.5,
                  "u8": rng.integers(0, 255, (B,), dtype=np.uint8), "scale": 2.5,
                  "table": np.arange(5)}  # not per sample: stays on the host
    p = coll.prepare_batch(b)
    placed = [(p["ids"][f], b["ids"][f].reshape(B, -1)) for f in b["ids"]]
    placed += [(p["weights"]["fa3"], b["weights"]["fa3"]), (p["x"], b["x"]), (p["y"], b["y"])]
    placed += [(p["extra"][k], b["extra"][k]) for k in ("x64", "flag", "u8")]
    for got, want in placed:
        assert isinstance(got, jax.Array) and got.dtype == want.dtype
        assert got.sharding.is_equivalent_to(coll.batch_sharding, got.ndim)
        np.testing.assert_array_equal(np.asarray(got), want)
    assert p["extra"]["scale"] == 2.5 and isinstance(p["extra"]["table"], np.ndarray)


def test_eval_does_not_insert_and_unseen_ids_get_their_initial_row(batches):
    coll = EmbeddingCollection(table_specs(OPTS["sgd"][0]), FEATURES, mesh=make_mesh())
    dense_tx = optax.sgd(0.1)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    state, _ = step(state, batches[0])
    before = coll.table_stats(state.tables)
    ev = coll.make_eval_fn(lambda p, emb, batch: emb)
    b = dict(batches[1])
    b["ids"] = dict(b["ids"], fa=np.full((B,), 10**12 + 7, np.int64))  # never seen
    emb = ev(state, b)
    want = h.init_rows(7, np.array([10**12 + 7]), 8, h.uniform(0.2))[0]
    np.testing.assert_array_equal(np.asarray(emb["fa"]), np.tile(want, (B, 1)))
    assert coll.table_stats(state.tables) == before


@slow_case  # refused inserts, growth and re-runs: also in the golden workload and test_training_paths
def test_tables_grow_at_step_boundaries_without_losing_rows(batches):
    """Tiny tables with eviction off: full buckets make the step re-run after
    the table doubled, so training still equals the reference."""
    ref = reference(batches[:25], OPTS["adagrad"][1], optax.adam(0.01))
    specs = [h.TableSpec(name=n, dim=DIMS[n], capacity=128, optimizer=OPTS["adagrad"][0],
                         seed=7 + i, initializer=h.uniform(0.2), bucket_size=4)
             for i, n in enumerate(DIMS)]
    coll = EmbeddingCollection(specs, FEATURES, mesh=make_mesh(), evict=False)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(head_loss, dense_tx)
    state = coll.init_train_state(init_params(), dense_tx)
    losses = []
    for b in batches[:25]:
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    assert state.tables["a"].keys.shape[0] > 128 and step.retries > 0
    assert_equivalent(state, losses, ref)
    stats = coll.table_stats(state.tables)
    assert all(v["evicted"] == 0 and v["insert_failed"] > 0 for v in stats.values())


def test_memory_cap_stops_growth_with_a_clear_error(batches):
    specs = [h.TableSpec(name=n, dim=DIMS[n], capacity=16, bucket_size=4) for n in DIMS]
    coll = EmbeddingCollection(specs, FEATURES, mesh=make_mesh(), evict=False,
                               max_shard_bytes=2_000)
    step = coll.make_train_step(head_loss, optax.sgd(0.1))
    state = coll.init_train_state(init_params(), optax.sgd(0.1))
    with pytest.raises(h.TableFullError, match="max_shard_bytes=2000"):
        for b in batches[:10]:
            state, _ = step(state, b)
