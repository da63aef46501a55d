"""Orbax checkpoints of a sharded TrainState: restorable on fewer devices
with equal eval logits, a snapshot of the step it was taken at even while
training goes on (a crash mid-save: test_fault_checkpoint_crash.py)."""

import logging
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.checkpoint import (
    CheckpointError, CheckpointManager, check_writable, local_rows, replica_rows)
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.placement import make_mesh

sys.path.insert(0, os.path.dirname(__file__))
import sparse_reference as sr  # noqa: E402
import test_collection as tc  # noqa: E402
from conftest import slow_case  # noqa: E402

TX = optax.adam(0.01)


def collection_on(devices: int, opt=tc.OPTS["adagrad"][0]) -> EmbeddingCollection:
    return EmbeddingCollection(tc.table_specs(opt), tc.FEATURES,
                               mesh=make_mesh(jax.devices()[:devices]))


def trained(devices: int, steps: int, batches):
    coll = collection_on(devices)
    step = coll.make_train_step(tc.head_loss, TX)
    state = coll.init_train_state(tc.init_params(), TX)
    for b in batches[:steps]:
        state, _ = step(state, b)
    return coll, step, state


def logits(params, emb, batch):
    feats = jnp.concatenate([emb["fa"], emb["fa3"], emb["fb"],
                             emb["fc"].reshape(emb["fc"].shape[0], -1), batch["x"]], axis=1)
    return feats @ params["w"] + params["c"]


def rows_by_key(state) -> dict[str, dict[int, np.ndarray]]:
    """Every table's rows (both folds) as {id: values, opt state, scores}."""
    out = {}
    for name, st in state.tables.items():
        parts = local_rows(st) + ([replica_rows(state.hot[name])[0]] if name in state.hot else [])
        rows = h.Rows.concat(parts)
        out[name] = {int(k): np.concatenate([rows.values[i].ravel(), rows.opt_state[i],
                                             [rows.last_step[i], rows.freq[i]]])
                     for i, k in enumerate(rows.keys)}
        assert len(out[name]) == len(rows.keys)  # one home per id
    return out


N, MORE = 6, 20  # steps before the checkpoint, steps after it


@pytest.fixture(scope="module")
def batches():
    return tc.make_batches(steps=N + MORE)


@slow_case  # restoring onto fewer devices and training on: [8-4] above
def test_restore_on_fewer_devices_gives_equal_eval_logits(tmp_path, batches):
    """8 devices, with a hot fold for table a, restored onto 4 and 1."""
    coll8, step8, state8 = trained(8, 6, batches)
    state8 = h.replication.apply_plan(coll8, state8, {"a": np.arange(12)})
    for b in batches[6:8]:  # the hot rows train too
        state8, _ = step8(state8, b)
    ckpt = CheckpointManager(tmp_path / "ck")
    assert ckpt.save(state8, coll8, extra={"data_step": 8}) == 8
    ckpt.wait()
    want = np.asarray(coll8.make_eval_fn(logits)(state8, batches[10]))
    want_rows = rows_by_key(state8)
    want_counters = h.replication.fold_counters(state8)
    for devices in (4, 1):
        coll = collection_on(devices)
        state, extra = CheckpointManager(tmp_path / "ck").restore(
            coll.init_train_state(tc.init_params(), TX), coll)
        assert extra == {"data_step": 8} and int(state.step) == 8
        assert set(state.hot) == {"a"}
        np.testing.assert_array_equal(np.sort(replica_rows(state.hot["a"])[0].keys),
                                      np.arange(12))
        got = np.asarray(coll.make_eval_fn(logits)(state, batches[10]))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        rows = rows_by_key(state)
        assert rows.keys() == want_rows.keys()
        for name in rows:
            assert rows[name].keys() == want_rows[name].keys()
            for k, r in rows[name].items():
                np.testing.assert_array_equal(r, want_rows[name][k])
        # counters are kept as totals over the shards, per fold
        assert h.replication.fold_counters(state) == want_counters
        per_shard = np.asarray(state.tables["a"].keys).reshape(devices, -1)
        for s in range(devices):  # each id on its new owner
            k = per_shard[s][per_shard[s] >= 0]
            assert (h.owner_of(k, devices) == s).all()
        step = coll.make_train_step(tc.head_loss, TX)  # and training goes on
        state, m = step(state, batches[8])
        assert np.isfinite(m["loss"]) and int(state.step) == 9


def test_async_save_is_a_snapshot_of_its_step(tmp_path, batches):
    """The next (donating) steps run while Orbax writes; the checkpoint still
    holds the state of the step it was taken at."""
    coll, step, state = trained(8, 4, batches)
    ckpt = CheckpointManager(tmp_path / "ck", max_to_keep=1)
    want_rows = rows_by_key(state)
    want_w = np.asarray(state.params["w"])
    ckpt.save(state, coll)
    for b in batches[4:8]:
        state, _ = step(state, b)
    ckpt.close()
    assert not np.array_equal(np.asarray(state.params["w"]), want_w)
    restored, _ = CheckpointManager(tmp_path / "ck").restore(
        coll.init_train_state(tc.init_params(), TX), coll)
    assert int(restored.step) == 4
    np.testing.assert_array_equal(np.asarray(restored.params["w"]), want_w)
    got = rows_by_key(restored)
    for name in want_rows:
        assert got[name].keys() == want_rows[name].keys()
        for k in got[name]:
            np.testing.assert_array_equal(got[name][k], want_rows[name][k])


def test_dense_only_state_round_trips(tmp_path):
    mesh = make_mesh()
    params = {"w": jnp.arange(6.0).reshape(2, 3)}
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = h.TrainState(jax.device_put(params, rep), jax.device_put(TX.init(params), rep), {},
                         jax.device_put(jnp.asarray(7, jnp.int64), rep))
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state, None)
    ckpt.close()
    template = state._replace(params=jax.tree.map(jnp.zeros_like, state.params))
    got, extra = CheckpointManager(tmp_path / "ck").restore(template, None)
    assert int(got.step) == 7 and extra == {} and got.tables == {}
    np.testing.assert_array_equal(np.asarray(got.params["w"]), np.asarray(params["w"]))


def test_a_state_with_empty_tables_round_trips_and_trains_on(tmp_path, batches):
    """Saved before the first step (no table holds a row: Orbax refuses
    zero-size arrays, so every shard carries a padding row), restored, and
    trained: as the run that never stopped."""
    coll, step, _ = trained(1, 0, batches)
    state = coll.init_train_state(tc.init_params(), TX)
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state, coll)
    ckpt.wait()
    got, _ = ckpt.restore(coll.init_train_state(tc.init_params(), TX), coll)
    assert all(v["size"] == 0 for v in coll.table_stats(got.tables).values())
    for b in batches[:2]:
        state, m = step(state, b)
        got, g = step(got, b)
        assert float(m["loss"]) == float(g["loss"])


def test_unusable_directories_and_mismatches_are_clear_errors(tmp_path, batches):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="is not writable"):
        check_writable(blocker / "ck")
    with pytest.raises(CheckpointError, match="is not writable"):
        CheckpointManager(blocker)
    coll = collection_on(8)
    empty = CheckpointManager(tmp_path / "none")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        empty.restore(coll.init_train_state(tc.init_params(), TX), coll)
    coll8, _, state8 = trained(8, 1, batches)
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state8, coll8)
    ckpt.wait()
    other = EmbeddingCollection(tc.table_specs(h.SGD()), tc.FEATURES)  # no optimizer state
    with pytest.raises(CheckpointError, match="optimizer state width 8; the spec has 8 and 0"):
        ckpt.restore(other.init_train_state(tc.init_params(), TX), other)
    fewer = EmbeddingCollection(tc.table_specs(tc.OPTS["adagrad"][0])[:2], tc.FEATURES[:3])
    with pytest.raises(CheckpointError, match=r"holds tables \['a', 'b', 'c'\]"):
        ckpt.restore(fewer.init_train_state(tc.init_params(), TX), fewer)


# ------------------------------------------- re-sharded, then trained on
ACCOUNTING = ("inserted", "evicted", "erased", "size", "moved_in", "moved_out")


def accounting(state) -> dict[str, dict[str, int]]:
    """Each table's row accounting over both folds (lookups and hits count
    per device and so depend on the mesh; these do not)."""
    return {n: {k: c[k] for k in ACCOUNTING}
            for n, c in h.replication.fold_counters(state).items()}


def assert_balanced(state):
    """Every row that came in is resident, evicted, erased or moved out."""
    for name, c in accounting(state).items():
        assert c["inserted"] + c["moved_in"] == \
            c["size"] + c["evicted"] + c["erased"] + c["moved_out"], (name, c)


def train_on(step, state, batches):
    """`state` trained on `batches`, the accounting checked after each step."""
    losses = []
    for b in batches:
        state, m = step(state, b)
        losses.append(m["loss"])
        assert_balanced(state)
    return state, losses


def assert_close(got, want, what, rtol=1e-5):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    bad = np.abs(got - want) > rtol * np.maximum(1, np.abs(want))
    assert not bad.any(), f"{what}: {bad.sum()} entries differ, e.g. {got[bad][:3]} vs " \
                          f"{want[bad][:3]}"


def assert_same_rows(got, want, *, rtol=None, scores=("last_step", "freq")):
    """Row dicts of rows_by_key: the same ids in every table, values and
    optimizer state equal (or within `rtol`), the named scores equal."""
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].keys() == want[name].keys(), name
        keys = sorted(want[name])
        g = np.stack([got[name][k] for k in keys])
        w = np.stack([want[name][k] for k in keys])
        if rtol is None:
            np.testing.assert_array_equal(g[:, :-2], w[:, :-2], err_msg=name)
        else:
            assert_close(g[:, :-2], w[:, :-2], name, rtol)
        for i, score in ((-2, "last_step"), (-1, "freq")):
            if score in scores:
                np.testing.assert_array_equal(g[:, i], w[:, i], err_msg=f"{name} {score}")


@pytest.fixture(scope="module")
def runs(batches, tmp_path_factory):
    """Per device count: (checkpoint of step N, state after N + MORE steps
    trained without a break, its losses); the 1-device run stops at N. Each
    checkpoint is written while the next steps run."""
    out = {}
    for devices, steps in ((1, N), (8, N + MORE), (4, N + MORE)):
        coll = collection_on(devices)
        step = coll.make_train_step(tc.head_loss, TX)
        state, losses = train_on(step, coll.init_train_state(tc.init_params(), TX), batches[:N])
        ckpt = CheckpointManager(tmp_path_factory.mktemp(f"on{devices}"))
        ckpt.save(state, coll)
        state, more = train_on(step, state, batches[N:steps])
        ckpt.close()
        out[devices] = ckpt.directory, state, losses + more
    return out


@pytest.mark.parametrize("before,after", [(1, 8), (8, 4)])
def test_restored_onto_another_mesh_trains_on_as_if_never_stopped(runs, batches, before, after):
    """N steps on `before` devices, restored onto `after` and trained MORE
    steps: equal to N + MORE steps on `after` devices from the start (row
    init is a pure function of (seed, id, column), each id has one owner and
    nothing is evicted, so the mesh only changes summation order)."""
    directory, _, first = runs[before]
    _, want, want_losses = runs[after]
    coll = collection_on(after)
    state, _ = CheckpointManager(directory).restore(
        coll.init_train_state(tc.init_params(), TX), coll)
    assert int(state.step) == N and state.tables["a"].keys.shape[0] == 2048
    assert_balanced(state)
    state, losses = train_on(coll.make_train_step(tc.head_loss, TX), state, batches[N:])
    assert int(state.step) == N + MORE
    assert_close(first[:N] + losses, want_losses, "losses")
    for part in ("params", "opt_state"):
        for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(getattr(state, part)),
                                jax.tree.leaves(getattr(want, part))):
            assert_close(g, w, f"{part}{jax.tree_util.keystr(path)}")
    assert_same_rows(rows_by_key(state), rows_by_key(want), rtol=1e-5)
    got_counts = accounting(state)
    assert got_counts == accounting(want)
    assert all(c["evicted"] == 0 and c["size"] > 0 for c in got_counts.values())


def test_scores_do_not_depend_on_the_device_count(runs):
    """The step-N rows of the 1-device run and of the 8-device checkpoint have
    the same scores: the owner looks an id up once per step, however many
    devices sent it (LFU's freq counts steps, not senders)."""
    _, one, _ = runs[1]
    _, saved, _ = CheckpointManager(runs[8][0]).read()
    for name, got in rows_by_key(one).items():
        rows = saved[name]
        np.testing.assert_array_equal(sorted(got), rows.keys)
        np.testing.assert_array_equal([got[k][-2] for k in rows.keys], rows.last_step)
        np.testing.assert_array_equal([got[k][-1] for k in rows.keys], rows.freq, err_msg=name)


# ------------------------------------------------- ids from all of int64
SPECIAL_IDS = np.array([-2**63, 2**63 - 1, -3, 0], np.int64)
TABLE_OF = {f.name: f.table for f in tc.FEATURES}


def wide_batches(steps: int, seed: int = 3) -> list[dict]:
    """tc's batches (zipf ids, multi-hot features with padding, weights) with
    each table's ids mapped onto ids from the whole int64 range: SPECIAL_IDS
    among the most frequent, the rest drawn at random, never -1 or -2."""
    rng = np.random.default_rng(seed)
    pools = {}
    for name, v in tc.V.items():
        draw = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=v + 8,
                            dtype=np.int64, endpoint=True)
        draw = draw[(draw != h.PADDING_ID) & (draw != h.ERASED_KEY) & ~np.isin(draw, SPECIAL_IDS)]
        draw = draw[np.sort(np.unique(draw, return_index=True)[1])]  # distinct, drawn order
        pools[name] = np.concatenate([draw[:1], SPECIAL_IDS, draw[1:]])[:v]
    return [dict(b, ids={f: np.where(x == h.PADDING_ID, x, pools[TABLE_OF[f]][np.maximum(x, 0)])
                         for f, x in b["ids"].items()})
            for b in tc.make_batches(seed=seed, steps=steps)]


def ids_of(batches, table: str) -> np.ndarray:
    """The distinct ids of `table` in `batches`, sorted (padding left out)."""
    ids = np.unique(np.concatenate([b["ids"][f].ravel() for b in batches for f in b["ids"]
                                    if TABLE_OF[f] == table]))
    return ids[ids != h.PADDING_ID]


def snapshot(ref: sr.Reference, losses: list[float]):
    """(params, {table: (ids, values, accumulators)}, losses) of the reference now."""
    tables = {n: (ref.vocab[n],) + ref.rows(n, ref.vocab[n]) for n in tc.DIMS}
    return jax.tree.map(np.asarray, ref.params), tables, list(losses)


def reference_by_id(batches, stops):
    """The reference (sparse_reference: tables keyed by any int64 id) after
    each step in `stops`: {step: snapshot}."""
    ref = sr.Reference(tc.table_specs(tc.OPTS["adagrad"][0]), tc.FEATURES, tc.head_loss,
                       tc.init_params(), TX, batches[:max(stops)])
    losses, out = [], {}
    for i, b in enumerate(batches[:max(stops)]):
        losses.append(ref.step(b))
        if i + 1 in stops:
            out[i + 1] = snapshot(ref, losses)
    return out


def assert_matches_reference(state, losses, ref, batches):
    """Losses, dense params, and each resident row (by id) against the
    reference: values, accumulators, and the last step that used it."""
    params, tables, ref_losses = ref
    assert_close(losses, ref_losses, "losses")
    for k in params:
        assert_close(state.params[k], params[k], k)
    got = rows_by_key(state)
    for name, (ids, values, acc) in tables.items():
        seen = ids_of(batches, name)
        np.testing.assert_array_equal(sorted(got[name]), seen)
        row = np.searchsorted(ids, seen)
        g = np.stack([got[name][k] for k in seen])
        dim = tc.DIMS[name]
        assert_close(g[:, :dim], values[row], f"{name} values")
        assert_close(g[:, dim:2 * dim], acc[row], f"{name} accumulators")
        last = {}
        for s, b in enumerate(batches, 1):
            for f, x in b["ids"].items():
                if TABLE_OF[f] == name:
                    last.update(dict.fromkeys(x[x != h.PADDING_ID].tolist(), s))
        np.testing.assert_array_equal(g[:, -2], [last[k] for k in seen.tolist()])


def test_ids_from_the_whole_int64_range_train_save_and_restore(tmp_path):
    wide = wide_batches(9)
    train, more, held_out = wide[:6], wide[6:8], wide[8]
    for name in tc.DIMS:
        seen = ids_of(train, name)
        assert np.isin(SPECIAL_IDS, seen).all() and (seen < -2).sum() > 10, name
        assert not np.isin([h.PADDING_ID, h.ERASED_KEY], seen).any()
    assert (wide[0]["ids"]["fb"] == h.PADDING_ID).any()
    assert not np.isin(ids_of([held_out], "a"), ids_of(wide[:8], "a")).all()  # unseen ids too
    ref = reference_by_id(wide[:8], stops=(6, 8))

    coll8 = collection_on(8)
    state8, losses = train_on(coll8.make_train_step(tc.head_loss, TX),
                              coll8.init_train_state(tc.init_params(), TX), train)
    assert_matches_reference(state8, losses, ref[6], train)
    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state8, coll8)
    ckpt.wait()
    want_rows = rows_by_key(state8)
    want_logits = np.asarray(coll8.make_eval_fn(logits)(state8, held_out))

    coll = collection_on(2)
    state, _ = ckpt.restore(coll.init_train_state(tc.init_params(), TX), coll)
    assert_same_rows(rows_by_key(state), want_rows)
    assert accounting(state) == accounting(state8)
    per_shard = np.asarray(state.tables["a"].keys).reshape(2, -1)
    for s in range(2):  # each id on its owner under the new mesh
        k = per_shard[s][(per_shard[s] != h.PADDING_ID) & (per_shard[s] != h.ERASED_KEY)]
        assert (h.owner_of(k, 2) == s).all()
    got_logits = np.asarray(coll.make_eval_fn(logits)(state, held_out))
    np.testing.assert_array_equal(got_logits, want_logits)

    state, more_losses = train_on(coll.make_train_step(tc.head_loss, TX), state, more)
    assert int(state.step) == 8
    assert_matches_reference(state, losses + more_losses, ref[8], train + more)


# --------------------------------------- grown, evicting, with a hot fold
def fold_totals(state) -> dict[str, tuple[list[int], list[int] | None]]:
    """Per table: the cold fold's counters summed over its shards, and the
    hot fold's (one replica), if any."""
    out = {}
    for name, st in state.tables.items():
        cold = np.asarray(st.counters).reshape(-1, h.table.NUM_COUNTERS).sum(axis=0)
        hot = replica_rows(state.hot[name])[1].tolist() if name in state.hot else None
        out[name] = cold.tolist(), hot
    return out


def small_collection(devices: int, grow_threshold: float = 0.5) -> EmbeddingCollection:
    """Tables of 64 rows in all (buckets of 16), capped at 10 KB per device:
    on 4 devices the first step's ids make them grow (table a twice), and
    past the cap rows are evicted by score."""
    specs = [h.TableSpec(name=n, dim=tc.DIMS[n], capacity=64, optimizer=tc.OPTS["adagrad"][0],
                         seed=7 + i, initializer=h.uniform(0.2), bucket_size=16)
             for i, n in enumerate(tc.DIMS)]
    return EmbeddingCollection(specs, tc.FEATURES, mesh=make_mesh(jax.devices()[:devices]),
                               evict=True, grow_threshold=grow_threshold, max_shard_bytes=10_240)


def test_grown_evicting_tables_with_a_hot_fold_restore_onto_more_devices(tmp_path, batches):
    coll4 = small_collection(4)
    step4 = coll4.make_train_step(tc.head_loss, TX)
    state, _ = train_on(step4, coll4.init_train_state(tc.init_params(), TX), batches[:6])
    assert step4.retries > 0
    grown = {n: st.keys.shape[0] for n, st in state.tables.items()}
    assert all(rows > 64 for rows in grown.values()), grown
    assert coll4.shard_bytes(state.tables) <= coll4.max_shard_bytes
    hot_ids = np.concatenate([np.arange(1, 9), [10**15]])  # the most frequent ids and a new one
    state = h.replication.apply_plan(coll4, state, {"a": hot_ids})
    assert_balanced(state)
    counts = accounting(state)["a"]
    assert counts["moved_out"] >= 8 and counts["moved_in"] >= 8 and counts["evicted"] > 0
    state, _ = train_on(step4, state, batches[6:10])
    assert {n: st.keys.shape[0] for n, st in state.tables.items()} == grown  # at the cap
    assert accounting(state)["a"]["evicted"] > counts["evicted"]

    ckpt = CheckpointManager(tmp_path / "ck")
    ckpt.save(state, coll4)
    ckpt.wait()
    want_rows, want_totals = rows_by_key(state), fold_totals(state)
    np.testing.assert_array_equal(np.sort(replica_rows(state.hot["a"])[0].keys), hot_ids)

    # (a growth right after the restore would only cost another compile here)
    coll8 = small_collection(8, grow_threshold=0.9)
    restored, _ = ckpt.restore(coll8.init_train_state(tc.init_params(), TX), coll8)
    assert int(restored.step) == 10 and set(restored.hot) == {"a"}
    assert_same_rows(rows_by_key(restored), want_rows)
    assert fold_totals(restored) == want_totals
    assert_balanced(restored)
    restored, losses = train_on(coll8.make_train_step(tc.head_loss, TX), restored,
                                batches[10:12])
    assert int(restored.step) == 12 and np.isfinite(losses).all()
    after = rows_by_key(restored)["a"]
    assert all(not np.array_equal(after[k][:8], want_rows["a"][k][:8]) for k in range(1, 9))


# ------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, batches):
    """A directory with the checkpoints of steps 2 and 4, and what each holds
    (params["w"], rows by key)."""
    directory = tmp_path_factory.mktemp("two") / "ck"
    coll = collection_on(8)
    step = coll.make_train_step(tc.head_loss, TX)
    state = coll.init_train_state(tc.init_params(), TX)
    ckpt, held = CheckpointManager(directory), {}
    for i, b in enumerate(batches[:4], start=1):
        state, _ = step(state, b)
        if i in (2, 4):
            held[i] = (np.asarray(state.params["w"]).copy(), rows_by_key(state))
            ckpt.save(state, coll)
            ckpt.wait()
    ckpt.close()
    return directory, held


def damage(directory, step: int, how: str):
    """Truncates or flips a byte of every table data file of `step`, or
    truncates its metadata file."""
    if how == "truncated meta":
        files = [directory / str(step) / "meta" / "metadata"]
    else:
        files = [p for p in (directory / str(step) / "tables").rglob("*")
                 if p.is_file() and p.parent.name == "d"]
    assert files
    for p in files:
        data = bytearray(p.read_bytes())
        if how == "flipped data":
            data[len(data) // 2] ^= 0xFF
        else:
            del data[len(data) // 2:]
        p.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated data", "flipped data", "truncated meta"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, two_checkpoints,
                                                                     how, caplog):
    src, held = two_checkpoints
    directory = tmp_path / "ck"
    shutil.copytree(src, directory)
    damage(directory, 4, how)
    ckpt = CheckpointManager(directory)
    assert ckpt.latest_step() == 4
    coll = collection_on(8)
    with pytest.raises(CheckpointError, match=rf"^checkpoint step 4 in {directory} cannot be "
                                              rf"read: \w+"):
        ckpt.restore(coll.init_train_state(tc.init_params(), TX), coll, step=4)
    assert ckpt.read()[2]["step"] == 2  # the host reader falls back the same way
    assert ckpt.all_steps() == [2, 4]  # and leaves the directory alone
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jax_hypereca"):
        state, _ = ckpt.restore(coll.init_train_state(tc.init_params(), TX), coll)
    assert int(state.step) == 2
    np.testing.assert_array_equal(np.asarray(state.params["w"]), held[2][0])
    got, want = rows_by_key(state), held[2][1]
    for name in want:
        assert got[name].keys() == want[name].keys()
        for k in want[name]:
            np.testing.assert_array_equal(got[name][k], want[name][k])
    (record,) = [r for r in caplog.records if "cannot be read" in r.getMessage()]
    msg = record.getMessage()
    assert msg.startswith(f"checkpoint step 4 in {directory} cannot be read (")
    assert msg.endswith("; falling back to step 2") and "Error" in msg
    # moved out of the step sequence, so that the resumed run's saves of
    # steps up to 4 are not skipped by Orbax
    assert ckpt.all_steps() == [2] and (directory / "4.unreadable").is_dir()


def test_no_readable_checkpoint_names_every_step_tried(tmp_path, two_checkpoints):
    src, _ = two_checkpoints
    directory = tmp_path / "ck"
    shutil.copytree(src, directory)
    damage(directory, 4, "flipped data")
    damage(directory, 2, "truncated meta")
    coll = collection_on(8)
    with pytest.raises(CheckpointError) as info:
        CheckpointManager(directory).restore(coll.init_train_state(tc.init_params(), TX), coll)
    msg = str(info.value)
    assert msg.startswith(f"no checkpoint in {directory} can be read: step 4: ")
    assert "; step 2: JSONDecodeError: " in msg and "truncated or corrupt" in msg
    assert CheckpointManager(directory).all_steps() == [2, 4]  # nothing moved
