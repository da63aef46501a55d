"""The host tier's native store (jax_hypereca.host_tier.HostStore) against a
Python dict: contents, counters, duplicates, the full int64 range, reserved
ids, the memory limit, TTL, chunked export, threads and determinism."""

from __future__ import annotations

import threading

import ml_dtypes
import numpy as np
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jax_hypereca.errors import ERASED_KEY, PADDING_ID, ReservedIdError
from jax_hypereca.host_tier import HOST_COUNTER_NAMES, HostStore, HostTierFullError

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
DIM, SW = 3, 2


def rows_for(keys, seed, dim=DIM, sw=SW, dtype=np.float32):
    """Distinct, recognisable rows for `keys` (values, state, last_step, freq)."""
    rng = np.random.default_rng(seed)
    n = len(keys)
    return (rng.standard_normal((n, dim)).astype(dtype), rng.standard_normal((n, sw)).astype(np.float32),
            rng.integers(0, 100, n), rng.integers(0, 1000, n))


def export_dict(store: HostStore, chunk=7) -> dict:
    out = {}
    for r in store.export_chunks(chunk):
        for i, k in enumerate(r.keys.tolist()):
            assert k not in out, f"key {k} exported twice"
            out[k] = (r.values[i].tolist(), r.opt_state[i].tolist(), int(r.last_step[i]),
                      int(r.freq[i]))
    return out


def export_order(store: HostStore, chunk=1000) -> list[int]:
    return [k for r in store.export_chunks(chunk) for k in r.keys.tolist()]


def entry(values, state, last, freq, i):
    return (values[i].tolist(), state[i].tolist(), int(last[i]), int(freq[i]))


def test_put_take_peek_erase_against_a_dict():
    s = HostStore(DIM, SW, partitions=4)
    keys = np.array([0, 1, I64_MIN, I64_MAX, -3, 12345678901234, -(2**62)], np.int64)
    v, o, last, freq = rows_for(keys, 0)
    assert s.put(keys, v, o, last, freq) == len(keys)
    ref = {int(k): entry(v, o, last, freq, i) for i, k in enumerate(keys)}
    assert export_dict(s) == ref and len(s) == len(keys)

    q = np.array([I64_MAX, 7, PADDING_ID, I64_MIN], np.int64)
    found, r = s.peek(q)
    assert found.tolist() == [True, False, False, True]
    assert r.keys.tolist() == [I64_MAX, PADDING_ID, PADDING_ID, I64_MIN]
    assert r.values[0].tolist() == ref[I64_MAX][0] and not r.values[1].any()
    assert s.contains(q).tolist() == found.tolist() and len(s) == len(keys)

    found, r = s.take(q)
    assert found.tolist() == [True, False, False, True]
    assert (r.opt_state[3].tolist(), int(r.last_step[3]), int(r.freq[3])) == ref[I64_MIN][1:]
    del ref[I64_MAX], ref[I64_MIN]
    assert s.erase(np.array([0, 0, 99, PADDING_ID])) == 1
    del ref[0]
    assert export_dict(s) == ref
    c = s.counters()
    assert (c["inserted"], c["take_hits"], c["take_misses"], c["erased"], c["erase_misses"]) == (
        7, 2, 1, 1, 2)  # padding ids are skipped, not counted
    assert c["inserted"] == len(s) + c["take_hits"] + c["erased"] + c["ttl_evicted"]


def test_duplicates_within_a_call_last_put_wins_first_take_finds():
    s = HostStore(DIM, SW)
    keys = np.array([5, 9, 5, 5, I64_MIN, I64_MIN], np.int64)
    v, o, last, freq = rows_for(keys, 1)
    assert s.put(keys, v, o, last, freq) == 3
    assert export_dict(s) == {5: entry(v, o, last, freq, 3), 9: entry(v, o, last, freq, 1),
                              I64_MIN: entry(v, o, last, freq, 5)}
    c = s.counters()
    assert (c["put_rows"], c["inserted"], c["overwritten"]) == (6, 3, 3)
    found, r = s.take(np.array([5, 5, 9]))
    assert found.tolist() == [True, False, True]
    assert r.values[0].tolist() == v[3].tolist() and not r.values[1].any()
    assert s.counters()["take_misses"] == 1 and len(s) == 1


def test_reserved_ids_are_refused_and_nothing_is_applied():
    s = HostStore(DIM, SW)
    v, o, last, freq = rows_for([1, 2], 2)
    for bad in (PADDING_ID, ERASED_KEY):
        with pytest.raises(ReservedIdError, match=rf"keys\[1\] = {bad} is the reserved"):
            s.put(np.array([1, bad]), v, o, last, freq)
    with pytest.raises(ReservedIdError, match="ERASED_KEY"):
        s.take(np.array([3, ERASED_KEY]))
    assert len(s) == 0 and not any(s.counters().values())
    # the native layer refuses them too (before anything is applied)
    raw = v.view(np.uint8).reshape(2, -1)
    with pytest.raises(ValueError, match=r"keys\[0\] = -2 is a reserved key"):
        s._native.put(np.array([ERASED_KEY, 1]), raw, o, last, freq)
    with pytest.raises(ValueError, match="reserved"):
        s._native.erase(np.array([ERASED_KEY]))
    assert len(s) == 0


def test_argument_checks_name_the_value_and_the_setting():
    s = HostStore(4, 1, name="t0")
    k = np.array([1, 2])
    good = (np.zeros((2, 4), np.float32), np.zeros((2, 1), np.float32), np.zeros(2, np.int64),
            np.zeros(2, np.int64))
    with pytest.raises(TypeError, match=r"'t0'.put: values have dtype float64, the store holds float32"):
        s.put(k, np.zeros((2, 4)), *good[1:])
    with pytest.raises(ValueError, match=r"expected \(2, 4\) for 2 keys and dim=4"):
        s.put(k, np.zeros((2, 5), np.float32), *good[1:])
    with pytest.raises(ValueError, match=r"state_width=1"):
        s.put(k, good[0], np.zeros((2, 2), np.float32), *good[2:])
    with pytest.raises(ValueError, match="last_step"):
        s.put(k, *good[:2], np.zeros(3, np.int64), good[3])
    with pytest.raises(TypeError, match="keys must be integers"):
        s.take(np.array([1.0]))
    with pytest.raises(ValueError, match="keys must be 1-D"):
        s.take(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="threads=3 must be in 1..partitions"):
        HostStore(4, 1, partitions=2, threads=3)
    with pytest.raises(TypeError, match="dtype"):
        HostStore(4, 1, dtype=np.int32)


def test_empty_calls():
    s = HostStore(DIM, SW)
    e = np.zeros(0, np.int64)
    assert s.put(e, np.zeros((0, DIM), np.float32), np.zeros((0, SW), np.float32), e, e) == 0
    found, r = s.take(e)
    assert found.shape == (0,) and r.values.shape == (0, DIM) and r.opt_state.shape == (0, SW)
    assert s.peek(e)[0].shape == (0,) and s.contains(e).shape == (0,) and s.erase(e) == 0
    assert s.evict_older_than(10).shape == (0,)
    rows, nxt = s.export(0, 5)
    assert rows.keys.shape == (0,) and nxt is None and list(s.export_chunks()) == []
    assert len(s) == 0 and s.bytes == 0 and s.counters()["put_rows"] == 0


def test_memory_limit_refuses_a_put_and_leaves_the_store_unchanged():
    s = HostStore(DIM, SW, partitions=2)
    k = np.arange(100, dtype=np.int64)
    s.put(k, *rows_for(k, 3))
    before, order, counters = export_dict(s), export_order(s), s.counters()
    s.memory_limit_bytes = s.bytes
    k2 = np.arange(1000, 1300, dtype=np.int64)
    with pytest.raises(HostTierFullError, match=rf"300 new ids.*memory_limit_bytes={s.bytes}"):
        s.put(k2, *rows_for(k2, 4))
    assert export_dict(s) == before and export_order(s) == order
    assert s.counters() == {**counters, "put_refused": 300}
    # puts that fit the allocated room still succeed: overwrites, and reused holes
    s.put(k[:10], *rows_for(k[:10], 5))
    s.take(k[10:20])
    s.put(k2[:10], *rows_for(k2[:10], 6))
    assert len(s) == 100
    s.memory_limit_bytes = None
    s.put(k2, *rows_for(k2, 4))
    assert len(s) == 100 + 290


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_make_room_lets_any_later_puts_of_that_many_new_ids_fit(partitions):
    """make_room(n) under a limit: then any puts adding n new ids in all --
    whichever partitions they hash to, in several calls -- fit without
    growing; room past the limit is refused with the numbers, nothing changed."""
    rng = np.random.default_rng(partitions)
    s = HostStore(DIM, SW, partitions=partitions)
    k = rng.integers(I64_MIN, I64_MAX, 500, dtype=np.int64)
    s.put(k, *rows_for(k, 0))
    s.memory_limit_bytes = s.bytes + 1_000_000  # room for 300 rows in each partition
    held = s.make_room(300)
    assert held == s.bytes <= s.memory_limit_bytes
    new = rng.integers(I64_MIN, I64_MAX, 300, dtype=np.int64)
    for part in np.array_split(new, 3):
        s.put(part, *rows_for(part, 1))
    assert s.bytes == held and len(s) == 800
    s.memory_limit_bytes = s.bytes
    before, counters = export_dict(s), s.counters()
    with pytest.raises(HostTierFullError, match=rf"room for 100000 more rows in each of its "
                                                rf"{partitions} partitions.*memory_limit_bytes="
                                                rf"{s.bytes}"):
        s.make_room(100_000)
    assert export_dict(s) == before and s.counters() == counters and s.bytes == held
    assert s.make_room(0) == held
    with pytest.raises(ValueError, match="rows=-1 must be >= 0"):
        s.make_room(-1)


def test_room_for_n_ids_spread_by_the_hash_holds_their_puts_and_is_far_below_n():
    """make_room_for(n): rows_per_partition(n) in each partition -- about
    n / partitions plus a margin, far below the worst case n -- and 40
    batches of n random distinct ids (the full int64 range; sequential ids
    too) put into a store that made that room never grow it. The bound
    itself: never above n, never below the largest count in 2,000 uniform
    multinomial draws."""
    from jax_hypereca.host_tier import rows_per_partition

    assert rows_per_partition(12_288, 16) == 995 and rows_per_partition(0, 16) == 0
    assert rows_per_partition(7, 1) == 7 and rows_per_partition(3, 16) == 3
    rng = np.random.default_rng(9)
    for n, p in ((100, 16), (12_288, 16), (5_000, 4)):
        most = rng.multinomial(n, [1 / p] * p, size=2000).max()
        assert most <= rows_per_partition(n, p) <= n
    n = 4096
    for trial in range(40):
        s = HostStore(DIM, SW, partitions=16)
        base = rng.integers(I64_MIN, I64_MAX, 1000, dtype=np.int64)
        s.put(base, *rows_for(base, 0))
        held = s.make_room_for(n)
        s.memory_limit_bytes = held  # any growth now is refused
        new = (np.arange(n, dtype=np.int64) + trial * n if trial % 2 else
               rng.integers(I64_MIN, I64_MAX, n, dtype=np.int64))
        s.put(new, *rows_for(new, 1))
        assert s.bytes == held and len(s) == 1000 + n


def test_evict_older_than_returns_the_expired_ids_in_export_order():
    s = HostStore(DIM, SW, partitions=3)
    k = np.arange(-50, 50, dtype=np.int64) * 7919
    v, o, last, freq = rows_for(k, 7)
    s.put(k, v, o, last, freq)
    order = export_order(s)
    step = {int(x): int(t) for x, t in zip(k, last)}
    out = s.evict_older_than(40)
    assert out.tolist() == [x for x in order if step[x] < 40]
    assert sorted(export_dict(s)) == sorted(x for x in order if step[x] >= 40)
    assert s.counters()["ttl_evicted"] == len(out)


def test_export_chunks_cover_every_row_once_in_a_fixed_order():
    s = HostStore(DIM, SW, partitions=5)
    k = np.arange(500, dtype=np.int64) ** 3
    s.put(k, *rows_for(k, 8))
    s.take(k[::3])
    orders = {chunk: export_order(s, chunk) for chunk in (1, 7, 333, 10_000)}
    assert all(o == orders[1] for o in orders.values())
    assert sorted(orders[1]) == sorted(set(k.tolist()) - set(k[::3].tolist()))
    rows, nxt = s.export(0, 332)
    assert rows.keys.shape == (332,) and nxt is not None
    rows2, nxt2 = s.export(nxt, 10)
    assert rows2.keys.tolist() == orders[1][332:334] and nxt2 is None


def test_bfloat16_rows_round_trip_bit_exactly():
    s = HostStore(5, 0, dtype="bfloat16")
    k = np.array([3, 1, 4])
    v = np.random.default_rng(0).standard_normal((3, 5)).astype(ml_dtypes.bfloat16)
    z = np.zeros(3, np.int64)
    s.put(k, v, np.zeros((3, 0), np.float32), z, z)
    found, r = s.take(k[::-1])
    assert found.all() and r.values.dtype == v.dtype
    assert r.values.view(np.uint16).tolist() == v[::-1].view(np.uint16).tolist()


def test_threads_give_the_same_results_and_export_order_as_one_thread():
    k = np.random.default_rng(9).integers(I64_MIN, I64_MAX, 6000, dtype=np.int64)
    k[:3] = [I64_MIN, I64_MAX, 0]
    stores = [HostStore(DIM, SW, threads=1), HostStore(DIM, SW, threads=2, parallel_min_keys=1),
              HostStore(DIM, SW, threads=4, parallel_min_keys=1)]
    outs = []
    for s in stores:
        s.put(k, *rows_for(k, 10))
        found, r = s.take(np.concatenate([k[::5], k[:10]]))
        s.put(k[::10], *rows_for(k[::10], 11))
        outs.append((found.tolist(), r.values.tolist(), s.evict_older_than(30).tolist(),
                     s.erase(k[1::7]), export_order(s), s.counters()))
    assert outs[0] == outs[1] == outs[2]


def test_concurrent_callers_are_serialized():
    s = HostStore(DIM, SW, threads=2, parallel_min_keys=512)
    k = np.arange(20_000, dtype=np.int64)
    s.put(k, *rows_for(k, 12))
    errors = []

    def churn(lo):
        try:
            for _ in range(20):
                found, r = s.take(k[lo:lo + 5000])
                s.put_rows(r._replace(keys=k[lo:lo + 5000]))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=churn, args=(lo,)) for lo in (0, 5000, 10_000)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == [] and len(s) == 20_000
    c = s.counters()
    assert c["take_hits"] == 3 * 20 * 5000 and c["inserted"] == len(s) + c["take_hits"]


POOL = [I64_MIN, I64_MIN + 1, -(2**40), -3, 0, 1, 2, 77, 2**40, I64_MAX - 1, I64_MAX]
# ~300 ids over 2 partitions of 128 index slots: long probe clusters, so the
# backward-shift deletion is exercised, with the extremes always in reach.
keys_st = st.lists(st.sampled_from(POOL) | st.integers(-150, -3) | st.integers(0, 150), max_size=60).map(
    lambda x: np.array(x, np.int64))


class HostStoreMachine(RuleBasedStateMachine):
    """put / take / erase / evict_older_than / export against a dict, on a
    one-thread store and a two-thread twin that must agree exactly."""

    def __init__(self):
        super().__init__()
        self.stores = [HostStore(DIM, SW, partitions=2),
                       HostStore(DIM, SW, partitions=2, threads=2, parallel_min_keys=1)]
        self.ref: dict[int, tuple] = {}
        self.count = dict.fromkeys(HOST_COUNTER_NAMES, 0)
        self.seed = 0

    @rule(keys=keys_st)
    def put(self, keys):
        self.seed += 1
        v, o, last, freq = rows_for(keys, self.seed)
        news = [s.put(keys, v, o, last, freq) for s in self.stores]
        distinct_new = {int(k) for k in keys} - set(self.ref)
        assert news == [len(distinct_new)] * 2
        for i, k in enumerate(keys.tolist()):
            self.ref[k] = entry(v, o, last, freq, i)
        self.count["put_rows"] += len(keys)
        self.count["inserted"] += len(distinct_new)
        self.count["overwritten"] += len(keys) - len(distinct_new)

    @rule(keys=keys_st)
    def take(self, keys):
        outs = [s.take(keys) for s in self.stores]
        for i, k in enumerate(keys.tolist()):
            hit = k in self.ref
            assert outs[0][0][i] == hit
            if hit:
                got = entry(outs[0][1].values, outs[0][1].opt_state, outs[0][1].last_step,
                            outs[0][1].freq, i)
                assert got == self.ref.pop(k)
            self.count["take_hits" if hit else "take_misses"] += 1
        assert outs[0][0].tolist() == outs[1][0].tolist()
        assert outs[0][1].values.tolist() == outs[1][1].values.tolist()

    @rule(keys=keys_st)
    def erase(self, keys):
        gone = [s.erase(keys) for s in self.stores]
        hits = 0
        for k in keys.tolist():
            hits += self.ref.pop(k, None) is not None
        assert gone == [hits] * 2
        self.count["erased"] += hits
        self.count["erase_misses"] += len(keys) - hits

    @rule(step=st.integers(0, 100))
    def evict_older_than(self, step):
        outs = [s.evict_older_than(step).tolist() for s in self.stores]
        expired = {k for k, e in self.ref.items() if e[2] < step}
        assert outs[0] == outs[1] and sorted(outs[0]) == sorted(expired)
        for k in expired:
            del self.ref[k]
        self.count["ttl_evicted"] += len(expired)

    @precondition(lambda self: self.ref)
    @rule(limit_over=st.integers(0, 64))
    def refused_put(self, limit_over):
        s = self.stores[0]
        before = export_order(s)
        s.memory_limit_bytes = s.bytes + limit_over
        k = np.arange(10**6, 10**6 + 200, dtype=np.int64)
        with pytest.raises(HostTierFullError):
            s.put(k, *rows_for(k, 0))
        s.memory_limit_bytes = 0
        assert export_order(s) == before
        self.count["put_refused"] += 200  # on stores[0] only; the invariant knows

    @invariant()
    def matches_the_dict(self):
        for i, s in enumerate(self.stores):
            assert export_dict(s, chunk=4) == self.ref
            assert len(s) == len(self.ref)
            c = s.counters()
            want = dict(self.count)
            if i == 1:
                want["put_refused"] = 0
            assert c == want
            assert c["inserted"] == len(s) + c["take_hits"] + c["erased"] + c["ttl_evicted"]
        assert export_order(self.stores[0]) == export_order(self.stores[1])


TestHostStoreMachine = HostStoreMachine.TestCase
TestHostStoreMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
