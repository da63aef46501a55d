"""Settling packed rows into several tables' stores in one native call
(jax_hypereca.host_tier.put_packed, what HostTier.settle uses), against a
dict per table: row order (the last occurrence of an id wins), padding
rows skipped, a store refused by its memory limit left unchanged while the
others apply, and bad input that changes no store."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from jax_hypereca.errors import ERASED_KEY, PADDING_ID
from jax_hypereca.host_tier import HostStore, put_packed
from jax_hypereca.table import Rows

DIM, SW, T = 3, 2, 4
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def packed_rows(rng, n, dtype=np.float32, pool=None):
    """n rows of random ids (the int64 ends among them; drawn from `pool`
    when given, so ids repeat) and a table index per row, -1 for a quarter
    of them (with the padding id as their key)."""
    keys = (rng.choice(pool, n) if pool is not None
            else rng.integers(I64_MIN, I64_MAX, n, dtype=np.int64))
    keys[:2] = [I64_MIN, I64_MAX]
    keys[(keys == PADDING_ID) | (keys == ERASED_KEY)] = 7
    table = rng.integers(0, T, n).astype(np.int32)
    pad = rng.random(n) < 0.25
    table[pad], keys[pad] = -1, PADDING_ID
    rows = Rows(keys, rng.standard_normal((n, DIM)).astype(dtype),
                rng.standard_normal((n, SW)).astype(np.float32),
                rng.integers(0, 100, n), rng.integers(1, 1000, n))
    return rows, table


def contents(store):
    """A store's rows as a dict id -> (values, state, last, freq) bytes."""
    out = {}
    for r in store.export_chunks():
        for i, k in enumerate(r.keys):
            out[int(k)] = (r.values[i].tobytes(), r.opt_state[i].tobytes(), int(r.last_step[i]),
                           int(r.freq[i]))
    return out


def expected(before, rows, table, t):
    """`before` with table t's rows of `rows` put in row order."""
    out = dict(before)
    for i in np.flatnonzero(table == t):
        out[int(rows.keys[i])] = (rows.values[i].tobytes(), rows.opt_state[i].tobytes(),
                                  int(rows.last_step[i]), int(rows.freq[i]))
    return out


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_rows_reach_their_tables_in_row_order(threads, dtype):
    rng = np.random.default_rng(threads)
    stores = [HostStore(DIM, SW, dtype=np.dtype(dtype).name, name=f"t{t}") for t in range(T)]
    first, table = packed_rows(rng, 500, dtype)
    pool = first.keys[first.keys != PADDING_ID]
    want = [expected({}, first, table, t) for t in range(T)]
    assert put_packed(stores, first, table, threads=threads) == [True] * T
    # again, ids repeating within the call and with what the stores hold
    again, table2 = packed_rows(rng, 800, dtype, pool=pool)
    want = [expected(want[t], again, table2, t) for t in range(T)]
    assert put_packed(stores, again, table2, threads=threads) == [True] * T
    for t in range(T):
        assert contents(stores[t]) == want[t]
        assert len(stores[t]) == len(want[t])


def test_a_full_store_refuses_its_rows_alone():
    rng = np.random.default_rng(1)
    stores = [HostStore(DIM, SW, name=f"t{t}") for t in range(T)]
    seed, seed_table = packed_rows(rng, 200)
    put_packed(stores, seed, seed_table)
    stores[2].memory_limit_bytes = stores[2].bytes  # no room to grow
    rows, table = packed_rows(rng, 4000)
    before = [contents(s) for s in stores]
    counters = stores[2].counters()
    applied = put_packed(stores, rows, table, threads=2)
    assert applied == [True, True, False, True]
    assert contents(stores[2]) == before[2]
    assert stores[2].counters()["put_refused"] == counters["put_refused"] + (table == 2).sum()
    for t in (0, 1, 3):
        assert contents(stores[t]) == expected(before[t], rows, table, t)


@pytest.mark.parametrize("bad", ["erased", "padding", "table", "layout"])
def test_bad_input_changes_no_store(bad):
    rng = np.random.default_rng(2)
    stores = [HostStore(DIM, SW, name=f"t{t}") for t in range(T)]
    rows, table = packed_rows(rng, 300)
    put_packed(stores, rows, table)
    before = [contents(s) for s in stores]
    rows, table = packed_rows(rng, 300)
    last = int(np.flatnonzero(table >= 0)[-1])
    if bad == "erased":
        rows.keys[last] = ERASED_KEY
    elif bad == "padding":
        rows.keys[last] = PADDING_ID
    elif bad == "table":
        table[last] = T
    else:
        stores = stores + [HostStore(DIM + 1, SW, name="wide")]
        before.append({})
    with pytest.raises(ValueError, match="reserved key|names table|one call per row layout"):
        put_packed(stores, rows, table)
    assert [contents(s) for s in stores] == before
