"""The rest of the public table ops fuzzed (test_fuzz_table_args.py has
find_or_insert, gather, TableSpec and the optimizers): unique, bucketize,
erase, erase_if, export, import_rows and apply_gradients, with arguments of
every dtype and shape, ids across the whole int64 range with the sentinels,
and counts, chunk sizes, thresholds and steps from 0, negative, huge, float
and NaN.

Contract: the documented result, checked against a numpy or dict model, or
a TypeError / ValueError naming the argument with the table unchanged --
never a crash, a hang (export once looped forever on chunk_size 0), a
silent clamp or a half-applied update."""

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jax_hypereca as h
from test_fuzz_table_args import SETTINGS, _acceptable_ids, _assert_unchanged, _snapshot, arrays

SPEC = h.TableSpec(name="t", dim=2, capacity=64, bucket_size=16)
COUNTS = st.one_of(st.integers(1, 8), st.sampled_from([0, 1, 2, 3, 64, -1, 2.5, float("nan"), None, True, "2",
                                    1 << 31, 1 << 62]), st.integers(-5, 70))
RESIDENT = np.array([3, -7, 2 ** 62, -2 ** 63, 11, 12, 13], np.int64)


def _valid_count(x, high: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= high


def _filled():
    """A table holding RESIDENT, id i last looked up at step i + 1."""
    state = h.init_table(SPEC)
    for i, k in enumerate(RESIDENT):
        state, _ = h.find_or_insert(SPEC, state, np.array([k]), step=i + 1)
    return state


@SETTINGS
@given(ids=arrays())
def test_unique_lists_each_id_once_in_first_seen_order(ids):
    event("refused" if not _acceptable_ids(ids) else "ran")
    if not _acceptable_ids(ids):
        with pytest.raises((TypeError, ValueError), match="ids"):
            h.unique(ids)
        return
    keys, inverse, count = (np.asarray(a) for a in h.unique(ids))
    as_int = ids.astype(np.int64)
    first = list(dict.fromkeys(k for k in as_int.tolist() if k != h.PADDING_ID))
    assert int(count) == len(first) and keys[:len(first)].tolist() == first
    assert (keys[len(first):] == h.PADDING_ID).all()
    pos = {k: i for i, k in enumerate(first)}
    assert inverse.tolist() == [pos.get(k, -1) for k in as_int.tolist()]


@SETTINGS
@given(ids=arrays(), shards=COUNTS, cap=COUNTS)
def test_bucketize_routes_each_id_to_its_owner_or_refuses(ids, shards, cap):
    ok = _acceptable_ids(ids) and _valid_count(shards, 1 << 20) and _valid_count(cap, 1 << 30)
    event("refused" if not ok else "ran")
    if not ok:
        with pytest.raises((TypeError, ValueError), match="ids|num_shards|capacity"):
            h.bucketize(ids, num_shards=shards, capacity=cap)
        return
    send, counts, position = (np.asarray(a) for a in h.bucketize(
        ids, num_shards=shards, capacity=cap))
    as_int = ids.astype(np.int64)
    owners = np.asarray(h.owner_of(as_int, shards))
    seen = np.zeros(shards, np.int64)
    for i, (k, s) in enumerate(zip(as_int.tolist(), owners.tolist())):
        if k == h.PADDING_ID:
            assert position[i] == -1
            continue
        j, seen[s] = seen[s], seen[s] + 1
        if j < cap:  # beyond capacity: counted (the caller's overflow), not sent
            assert position[i] == s * cap + j and send[s, j] == k
        else:
            assert position[i] == -1
    assert counts.tolist() == seen.tolist()


@SETTINGS
@given(ids=arrays())
def test_erase_removes_exactly_the_resident_ids_it_is_given(ids):
    state = _filled()
    before = _snapshot(state)
    if not _acceptable_ids(ids):
        event("refused")
        with pytest.raises((TypeError, ValueError), match="ids"):
            h.erase(SPEC, state, ids)
        _assert_unchanged(state, before)
        return
    event("ran")
    resident = set(RESIDENT.tolist())
    as_int = ids.astype(np.int64).tolist()
    want = []
    for k in as_int:
        want.append(k in resident)
        resident.discard(k)
    new, erased = h.erase(SPEC, state, ids)
    assert np.asarray(erased).tolist() == want
    _, found = h.find(SPEC, new, RESIDENT)
    assert np.asarray(found).tolist() == [k in resident for k in RESIDENT.tolist()]
    assert h.counters_dict(new)["size"] == len(resident)


THRESHOLDS = st.one_of(st.none(), st.integers(-3, 12), st.sampled_from(
    [2.5, float("nan"), "3", 1 << 63, -(1 << 63) - 1, np.int64(4)]))


@SETTINGS
@given(chunk=COUNTS, below=THRESHOLDS, at_least=THRESHOLDS, erase=st.booleans())
def test_export_and_erase_if_select_rows_by_score_or_refuse(chunk, below, at_least, erase):
    state = _filled()
    before = _snapshot(state)
    scores = dict(zip(RESIDENT.tolist(), range(1, len(RESIDENT) + 1)))  # LRU: last step
    given_ = [(n, v) for n, v in (("below", below), ("at_least", at_least)) if v is not None]
    ok_thr = len(given_) <= 1 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        and -(1 << 63) <= int(v) < (1 << 63) for _, v in given_)
    ok = ok_thr and (erase or _valid_count(chunk, 1 << 30))
    event(f"{'erase_if' if erase else 'export'} {'ran' if ok else 'refused'}")
    call = (lambda: h.erase_if(SPEC, state, below=below, at_least=at_least)) if erase else (
        lambda: h.export(SPEC, state, chunk_size=chunk, below=below, at_least=at_least))
    if not ok:
        with pytest.raises((TypeError, ValueError), match="chunk_size|below|at_least"):
            call()
        _assert_unchanged(state, before)
        return
    name, thr = given_[0] if given_ else ("all", None)
    picked = {k for k, sc in scores.items()
              if name == "all" or (sc < thr if name == "below" else sc >= thr)}
    if erase:
        new, count = call()
        assert int(count) == len(picked)
        _, found = h.find(SPEC, new, RESIDENT)
        assert {k for k, f in zip(RESIDENT.tolist(), np.asarray(found)) if not f} == picked
    else:
        chunks = list(call())
        assert all(len(c.keys) <= chunk for c in chunks)
        got = [k for c in chunks for k in c.keys.tolist()]
        assert sorted(got) == sorted(picked)
        _assert_unchanged(state, before)


@SETTINGS
@given(n=st.integers(0, 4), dim=st.sampled_from([2, 2, 3]), lens=st.lists(
    st.sampled_from([0, 0, 0, 0, 1, -1]), min_size=4, max_size=4),
       bad=st.sampled_from([None, None, "nan", "inf", "state_nan"]),
       data=st.data())
def test_import_rows_upserts_whole_rows_or_refuses_by_field(n, dim, lens, bad, data):
    state = _filled()
    before = _snapshot(state)
    keys = np.array(data.draw(st.lists(st.one_of(st.sampled_from(RESIDENT.tolist()),
                                                 st.integers(-(1 << 63), (1 << 63) - 1)),
                                       min_size=n, max_size=n, unique=True)), np.int64)
    keys = keys[(keys != h.PADDING_ID) & (keys != h.ERASED_KEY)]
    n = len(keys)
    rng = np.random.default_rng(n)
    rows = h.Rows(keys, rng.normal(size=(max(n + lens[0], 0), dim)).astype(np.float32),
                  np.ones((max(n + lens[1], 0), 1), np.float32),
                  np.full(max(n + lens[2], 0), 9, np.int64), np.ones(max(n + lens[3], 0),
                                                                    np.int64))
    field = rows.opt_state if bad == "state_nan" else rows.values
    poisoned = bool(bad) and len(field) > 0
    if poisoned:
        field[-1, 0] = np.inf if bad == "inf" else np.nan
    shapes_ok = (rows.values.shape == (n, SPEC.dim) and rows.opt_state.shape == (n, 1)
                 and rows.last_step.shape == (n,) and rows.freq.shape == (n,))
    ok = shapes_ok and not poisoned
    event("refused" if not ok else "imported")
    if not ok:
        with pytest.raises(ValueError, match="rows\\.(values|opt_state|last_step|freq)"):
            h.import_rows(SPEC, state, rows)
        _assert_unchanged(state, before)
        return
    new, slots, status = h.import_rows(SPEC, state, rows)
    fresh = len(set(keys.tolist()) - set(RESIDENT.tolist()))
    assert np.asarray(status).tolist() == [n, fresh, n - fresh, 0]
    got, found = h.find(SPEC, new, keys)
    assert np.asarray(found).all()
    np.testing.assert_array_equal(np.asarray(got), rows.values)


@SETTINGS
@given(slots=st.one_of(arrays(), hnp.arrays(np.int32, st.integers(0, 6),
                                             elements=st.integers(-3, 70))), dim=st.sampled_from([2, 2, 3]), nan_at=st.integers(-1, 3),
       step=st.one_of(st.integers(-2, 5), st.sampled_from([1.5, None, 1 << 40])))
def test_apply_gradients_updates_valid_slots_or_refuses(slots, dim, nan_at, step):
    state = _filled()
    before = _snapshot(state)
    n = slots.shape[0] if slots.ndim == 1 else 0
    grads = np.full((n, dim), 0.5, np.float32)
    if 0 <= nan_at < n:
        grads[nan_at, 0] = np.nan
    i32 = np.iinfo(np.int32)
    fits = slots.dtype.kind in "iu" and slots.ndim == 1 and (slots.size == 0 or (
        i32.min <= int(slots.astype(object).min()) and int(slots.astype(object).max()) <= i32.max))
    ok = fits and dim == SPEC.dim and isinstance(step, int) and step >= 0
    event("refused" if not ok else "applied")
    if not ok:
        with pytest.raises((TypeError, ValueError), match="slots|grads|step"):
            h.apply_gradients(SPEC, state, slots, grads, step=step)
        _assert_unchanged(state, before)
        return
    new, status = h.apply_gradients(SPEC, state, slots, grads, step=step)
    as_int = slots.astype(np.int64)
    valid = sorted({int(s) for s in as_int if 0 <= s < state.capacity})
    nonfinite = {int(as_int[nan_at])} if 0 <= nan_at < n else set()
    nonfinite &= set(valid)
    assert np.asarray(status)[:3].tolist() == [
        len(valid), len(nonfinite), int(((as_int < -1) | (as_int >= state.capacity)).sum())]
    values = np.asarray(new.values)
    for s in range(state.capacity):  # skipped and untouched rows unchanged, the others moved
        same = np.array_equal(values[s], before[1][s])
        assert same == (s not in valid or s in nonfinite), s


_COLL = {}


def _collection():
    """One device: feature a (one id per sample), m (two weighted ids)."""
    if not _COLL:
        import jax
        tables = [h.TableSpec(name="t", dim=2, capacity=64)]
        features = [h.FeatureSpec(name="a", table="t"),
                    h.FeatureSpec(name="m", table="t", max_ids=2, weighted=True)]
        _COLL["c"] = h.EmbeddingCollection(tables, features, mesh=h.make_mesh(jax.devices()[:1]))
    return _COLL["c"]


@SETTINGS
@given(ids=st.one_of(arrays(), hnp.arrays(np.int64, st.integers(1, 5), elements=st.integers(
    -(1 << 63), (1 << 63) - 1))), w_shape=st.sampled_from(["match", "match", "long", "flat"]),
       w_bad=st.sampled_from([None, None, np.nan, np.inf]))
def test_a_collection_batch_is_placed_as_given_or_refused_naming_the_feature(ids, w_shape,
                                                                          w_bad):
    """prepare_batch: feature a gets fuzzed ids, m valid ids [B, 2] and
    fuzzed weights; accepted batches reach the mesh as int64 unchanged."""
    coll = _collection()
    b = ids.shape[0] if ids.ndim >= 1 else 1
    m = np.arange(2 * b, dtype=np.int64).reshape(b, 2)
    w = {"match": np.ones((b, 2)), "long": np.ones((b + 1, 2)),
         "flat": np.ones(2 * b)}[w_shape].astype(np.float32)
    if w_bad is not None and w.size:
        w.flat[-1] = w_bad
    ids_ok = (ids.dtype.kind in "iu" and ids.ndim in (1, 2) and ids.shape[1:] in ((), (1,))
              and (ids.dtype != np.uint64 or not (ids >= np.uint64(1 << 63)).any())
              and not (ids.astype(np.int64) == h.ERASED_KEY).any())
    w_ok = w_shape == "match" and (w_bad is None or not w.size)
    event(f"ids {'ok' if ids_ok else 'refused'}, weights {'ok' if w_ok else 'refused'}")
    batch = {"ids": {"a": ids, "m": m}, "weights": {"m": w}}
    if not (ids_ok and w_ok):
        named = "feature 'a'" if not ids_ok else "feature 'm'"
        with pytest.raises((TypeError, ValueError), match=named):
            coll.prepare_batch(batch)
        return
    out = coll.prepare_batch(batch)
    got = np.asarray(out["ids"]["a"])
    assert got.dtype == np.int64 and got.shape == (b, 1)
    np.testing.assert_array_equal(got[:, 0], ids.astype(np.int64).reshape(-1))
