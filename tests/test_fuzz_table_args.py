"""The public table API fuzzed with bad arguments: ids and slots of every
integer, float and bool dtype, 0-d / 1-d / 2-d, values across the whole
int64 (and uint64) range with the sentinels; TableSpec fields and optimizer
hyperparameters of every kind (0, negative, NaN, inf, huge, tiny, bools,
strings, floats where integers go).

Contract: the documented result (checked against a dict model: every id but
the padding id -1 and the reserved id -2 is found after find_or_insert, and
gather counts exactly the slots outside [-1, rows)), or a TypeError /
ValueError naming the argument, the table's arrays unchanged.
HYPERECA_SLOW_TESTS=1 runs 10x the examples (pytest
--hypothesis-show-statistics prints how many each test tried, refused and accepted)."""

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jax_hypereca as h

SLOW = os.environ.get("HYPERECA_SLOW_TESTS") == "1"
SETTINGS = settings(max_examples=1000 if SLOW else 100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
SPEC = h.TableSpec(name="t", dim=4, capacity=256, bucket_size=16)
INT64 = np.iinfo(np.int64)
SENTINELS = [int(INT64.min), int(INT64.max), h.PADDING_ID, h.ERASED_KEY, 0, 1]
DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64, np.bool_]


@st.composite
def arrays(draw, max_side: int = 3):
    """Arrays of any dtype above, 0-d to 2-d, elements from the dtype's whole
    range and the sentinels (where they fit)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.sampled_from([(), (0,), (1,), (2,), (3,), (2, 2), (1, 3)]))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        fitting = [s for s in SENTINELS if info.min <= s <= info.max]
        elements = st.one_of(st.sampled_from(fitting + [int(info.max)]),
                             st.integers(int(info.min), int(info.max)))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


def _snapshot(state) -> list[np.ndarray]:
    return [np.asarray(a).copy() for a in state]


def _assert_unchanged(state, before):
    for got, want in zip(_snapshot(state), before, strict=True):
        np.testing.assert_array_equal(got, want)


def _acceptable_ids(ids: np.ndarray) -> bool:
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        return False
    return ids.dtype != np.uint64 or not (ids >= np.uint64(1 << 63)).any()


@SETTINGS
@given(ids=arrays())
def test_find_or_insert_stores_what_it_may_and_refuses_the_rest(ids):
    state = h.init_table(SPEC)
    before = _snapshot(state)
    event("refused" if not _acceptable_ids(ids) else "stored")
    if not _acceptable_ids(ids):
        with pytest.raises((TypeError, ValueError), match="ids"):
            h.find_or_insert(SPEC, state, ids, step=1)
        _assert_unchanged(state, before)
        return
    new, res = h.find_or_insert(SPEC, state, ids, step=1)
    as_int = ids.astype(np.int64)
    stored = (as_int != h.PADDING_ID) & (as_int != h.ERASED_KEY)
    assert (np.asarray(res.slots) >= 0).tolist() == stored.tolist()
    _, found = h.find(SPEC, new, as_int)
    assert np.asarray(found).tolist() == stored.tolist()
    assert h.counters_dict(new)["size"] == len(set(as_int[stored].tolist()))


@SETTINGS
@given(slots=arrays())
def test_gather_reads_counts_or_refuses_slots(slots):
    state = h.init_table(SPEC)
    rows = state.capacity
    before = _snapshot(state)
    fits = slots.dtype.kind in "iu" and slots.ndim == 1 and (
        slots.size == 0 or (int(slots.max()) <= INT64.max and
                            np.iinfo(np.int32).min <= int(slots.astype(object).min()) and
                            int(slots.astype(object).max()) <= np.iinfo(np.int32).max))
    event("refused" if not fits else "read")
    if not fits:
        with pytest.raises((TypeError, ValueError), match="slots"):
            h.gather(state, slots, with_status=True)
        _assert_unchanged(state, before)
        return
    values, bad = h.gather(state, slots, with_status=True)
    as_int = slots.astype(np.int64)
    assert np.asarray(values).shape == (len(slots), SPEC.dim)
    assert int(bad) == int(((as_int < -1) | (as_int >= rows)).sum())
    _assert_unchanged(state, before)


VALUES = st.one_of(
    st.sampled_from([0, 0.0, -0.0, -1, -1e-3, 1e-3, 0.5, 0.999, 1.0, 2.0, 1e30, 1e39, 1e300,
                     1e-50, 1e-300, float("nan"), float("inf"), -float("inf"), True, False,
                     "0.1", None, np.float32(0.1), np.int64(3)]),
    st.floats(allow_nan=True, allow_infinity=True))
OPTIMIZERS = [h.SGD, h.Adagrad, h.RowwiseAdagrad, h.Adam, h.FTRL]
RANGES = {"b1": (0.0, 1.0), "b2": (0.0, 1.0)}


def _valid_hparam(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        return False
    with np.errstate(over="ignore"):
        x = float(np.float32(value))
    low, high = RANGES.get(name, (0.0, None))
    return bool(np.isfinite(x) and (x > 0 if name == "learning_rate" else x >= low)
                and (high is None or x < high))


@SETTINGS
@given(opt=st.sampled_from(OPTIMIZERS), data=st.data())
def test_optimizer_hyperparameters_are_valid_float32_or_refused_by_name(opt, data):
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(opt)]), label="field")
    value = data.draw(VALUES, label="value")
    event("refused" if not _valid_hparam(name, value) else "accepted")
    if not _valid_hparam(name, value):
        with pytest.raises(ValueError, match=rf"^{opt.__name__}: {name}="):
            opt(**{name: value})
        return
    hp = np.asarray(opt(**{name: value}).hparams(0))
    assert np.isfinite(hp).all()


SPEC_FIELDS = {"dim": 1, "capacity": 1, "bucket_size": 1, "seed": int(INT64.min)}


@SETTINGS
@given(field=st.sampled_from(sorted(SPEC_FIELDS)), data=st.data())
def test_table_spec_fields_are_integers_in_range_or_refused_by_name(field, data):
    value = data.draw(st.one_of(st.sampled_from([0, 1, -1, 16, 100, 2**16, 2**17, 2**62,
                                                 2**63, -2**63 - 1, 16.0, 1.5, True,
                                                 float("nan"), "16", np.int32(16)]),
                                st.integers(-2**70, 2**70)), label="value")
    try:
        spec = h.TableSpec(name="t", dim=4, capacity=256, **{field: value})
    except (TypeError, ValueError) as e:
        event("refused")
        assert f"{field}" in str(e)
        return
    event("accepted")
    got = getattr(spec, field)
    assert isinstance(got, (int, np.integer)) and not isinstance(got, bool)
    assert SPEC_FIELDS[field] <= int(got) <= INT64.max
    if field == "bucket_size":
        assert got & (got - 1) == 0 and got <= 65536
