"""The CUDA custom calls against the CPU ones: every op of the table format.

Every test runs the same sequence of calls with the table on the CPU and on the
GPU and asserts that every output and every table array is identical, bit for
bit: slots, found, the evicted rows and their order, status, counters, keys,
values, optimizer state and scores; erase, erase_if, export, import_rows and
grow; unique, bucketize and gather_tagged. The one allowance: Adam's bias
corrections use powf, whose last bit may differ between CUDA and glibc, and
slots with more than kApplyExactRun (256) gradient rows in one call are summed
in a fixed tree on the GPU (deterministic, not the CPU's order): those are
compared within float32 rounding. A sharded EmbeddingCollection trained on a
one-GPU mesh matches the same training on one CPU device. Skipped where JAX
sees no GPU (run tools/gpu_check.sh on a CUDA machine).

HYPERECA_TEST_TARGET=cpu runs the same comparisons CPU against CPU: a check of
this harness (and of the workloads' coverage) on machines without a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import jax_hypereca as h
from jax_hypereca import _native, _ops
from jax_hypereca import table as tbl
from jax_hypereca.errors import insert_status_dict


from cuda_target import (CPU, ON_GPU, TARGET, Pair, _apply, assert_close, assert_same, put,
                         skip_without_target)

skip_without_target()

# the routing ops (the table ops' jits are the harness's, cuda_target.py)
_unique = jax.jit(_ops.unique)
_bucketize = jax.jit(_ops.bucketize, static_argnames=("num_shards", "capacity"))
_gather_tagged = jax.jit(_ops.gather_tagged)

# ---------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    bucket_size: int
    capacity: int
    dim: int
    dtype: object
    optimizer: h.Optimizer
    policy: str
    init: h.Initializer
    sizes: tuple[int, ...]          # batch sizes drawn per call
    steps: int
    ev_modes: tuple[str, ...] = ("n",)  # max_evictions: n, more (n+5), third (n//3), zero
    erase_every: int = 0            # erase some resident ids every k calls (tombstones)
    skew: float = 0.9               # Zipf exponent of the id draw (duplicates)
    donate: bool = False
    expect: tuple[str, ...] = ("hits", "inserted", "evicted")  # status counts that must occur


WORKLOADS = [
    Workload("b4_f32_sgd_lru", 4, 64, 4, jnp.float32, h.SGD(), "lru", h.uniform(0.5),
             (40, 96), 14, ("n",), erase_every=5,
             expect=("hits", "inserted", "evicted", "failed", "reserved")),
    Workload("b4_bf16_rowwise_lfu", 4, 64, 3, jnp.bfloat16, h.RowwiseAdagrad(), "lfu",
             h.normal(0.3), (40, 96), 14, ("n", "third", "zero", "more"), erase_every=4,
             expect=("hits", "inserted", "evicted", "failed", "reserved")),
    Workload("b32_f32_adagrad_lru", 32, 256, 8, jnp.float32, h.Adagrad(), "lru",
             h.uniform(0.1), (64, 300), 12, ("n", "third"), erase_every=5),
    Workload("b32_bf16_sgd_lfu", 32, 256, 16, jnp.bfloat16, h.SGD(), "lfu", h.constant(0.25),
             (64, 300), 12, ("n", "more", "third"), erase_every=5),
    Workload("b128_f32_rowwise_lfu", 128, 1024, 5, jnp.float32, h.RowwiseAdagrad(), "lfu",
             h.normal(1.0), (256, 900), 12, ("n", "third"), erase_every=4),
    Workload("b128_bf16_adagrad_lru", 128, 1024, 4, jnp.bfloat16, h.Adagrad(), "lru",
             h.uniform(0.05), (256, 900), 12, ("n",), erase_every=6),
    Workload("b1_f32_rowwise_lru", 1, 32, 2, jnp.float32, h.RowwiseAdagrad(), "lru",
             h.uniform(1.0), (24, 50), 12, ("n", "third"),
             expect=("hits", "inserted", "evicted", "failed")),
    Workload("b1024_f32_sgd_lfu", 1024, 2048, 1, jnp.float32, h.SGD(), "lfu", h.normal(0.2),
             (700, 1500), 10, ("n", "third"), erase_every=4, skew=0.5),
    # Many warps at once: bucket runs in parallel, bitmap words shared by buckets.
    Workload("big_b4_bf16_rowwise_lru", 4, 4096, 8, jnp.bfloat16, h.RowwiseAdagrad(), "lru",
             h.uniform(0.2), (3000,), 8, ("n",), erase_every=3, skew=0.3, donate=True),
    Workload("big_b128_f32_adagrad_lfu", 128, 32768, 16, jnp.float32, h.Adagrad(), "lfu",
             h.normal(0.1), (20000,), 6, ("n",), erase_every=4, skew=0.2, donate=True),
    # Row widths past one register chunk (256 columns per warp) and the other
    # optimizers' state layouts.
    Workload("b16_f32_adam_lru", 16, 512, 300, jnp.float32, h.Adam(learning_rate=0.01), "lru",
             h.uniform(0.1), (200, 500), 6, ("n",), erase_every=3),
    Workload("b16_bf16_ftrl_lfu", 16, 512, 40, jnp.bfloat16, h.FTRL(learning_rate=0.1), "lfu",
             h.uniform(0.1), (200, 500), 6, ("n",), erase_every=3),
    Workload("b32_f32_rowwise_wide", 32, 256, 520, jnp.float32, h.RowwiseAdagrad(), "lru",
             h.normal(0.1), (100, 300), 5, ("n",), erase_every=2),
]


def _universe(rng, size: int) -> np.ndarray:
    small = np.arange(size // 2, dtype=np.int64) * 7 + 3
    big = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=size - size // 2,
                       dtype=np.int64)
    u = np.unique(np.concatenate([small, big]))
    u = u[(u != h.PADDING_ID) & (u != h.ERASED_KEY)]
    return rng.permutation(u)


def _draw(rng, universe, n: int, skew: float, padding=0.06, reserved=0.02) -> np.ndarray:
    p = 1.0 / np.arange(1, len(universe) + 1) ** skew
    ids = rng.choice(universe, size=n, p=p / p.sum())
    r = rng.random(n)
    ids[r < padding] = h.PADDING_ID
    ids[(r >= padding) & (r < padding + reserved)] = h.ERASED_KEY
    return ids.astype(np.int64)


def _max_evictions(mode: str, n: int) -> int:
    return {"n": n, "more": n + 5, "third": n // 3, "zero": 0}[mode]


def run_workload(w: Workload, seed: int) -> Counter:
    spec = tbl.TableSpec(name=w.name, dim=w.dim, capacity=w.capacity,
                         bucket_size=w.bucket_size, dtype=w.dtype, optimizer=w.optimizer,
                         policy=w.policy, initializer=w.init, seed=seed)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    assert state.capacity == w.capacity
    assert tbl._bucket_size(spec, state) == w.bucket_size
    pair = Pair(spec, state)
    rng = np.random.default_rng(seed)
    universe = _universe(rng, 3 * w.capacity)
    totals: Counter = Counter()
    step = 0
    for i in range(w.steps):
        step += int(rng.integers(0, 3))  # 0: the same step again (score ties)
        n = int(rng.choice(w.sizes))
        ids = _draw(rng, universe, n, w.skew)
        r = rng.random()
        # pin_from: default (= step), older (pins recent rows), or later (clamped to step).
        pin_from = step if r < 0.4 else (step - int(rng.integers(1, 4)) if r < 0.85 else step + 3)
        mode = w.ev_modes[i % len(w.ev_modes)]
        what = f"{w.name} seed={seed} call={i} step={step} pin_from={pin_from} n={n} ev={mode}"
        res = pair.insert(ids, step, pin_from, _max_evictions(mode, n), donate=w.donate,
                          what=what)
        totals.update(insert_status_dict(res.status))
        if i % 3 == 2 or i == w.steps - 1:
            probe = np.concatenate([_draw(rng, universe, 60, w.skew, 0.05, 0.05),
                                    [h.PADDING_ID, h.ERASED_KEY, 12345678901]]).astype(np.int64)
            pair.find(probe, miss_init=bool(i % 2), what=what)
            slots = np.asarray(res.slots).astype(np.int32).copy()
            extra = np.array([-1, -7, w.capacity, w.capacity + 3, 2**31 - 1, 0,
                              w.capacity - 1], np.int32)
            pair.gather(np.concatenate([slots, extra]), what=what)
        # The step's gradients: duplicates (the batch's own), -1, bad slots, a
        # NaN row now and then.
        slots = np.asarray(res.slots).astype(np.int32)
        slots = np.concatenate([slots, [-1, -5, w.capacity]]).astype(np.int32)
        grads = rng.normal(size=(len(slots), w.dim)).astype(np.float32)
        valid = np.flatnonzero((slots >= 0) & (slots < w.capacity))
        if i % 4 == 3 and valid.size:
            grads[rng.choice(valid)] = np.nan
        status = pair.apply(slots, grads, i, what=what)
        totals["nonfinite"] += int(np.asarray(status)[1])
        if w.erase_every and i % w.erase_every == w.erase_every - 1:
            keys = np.asarray(pair.ref.keys)
            live = keys[(keys != h.PADDING_ID) & (keys != h.ERASED_KEY)]
            if live.size:
                victims = rng.choice(live, size=max(1, live.size // 5), replace=False)
                ids = np.concatenate([victims, victims[:2], universe[:3],
                                      [h.PADDING_ID, h.ERASED_KEY]])
                erased = pair.erase(rng.permutation(ids), what=what)
                totals["erase_calls"] += 1
                totals["erased"] += int(np.asarray(erased).sum())
        if i == w.steps // 2:
            score = int(np.median(np.asarray(pair.ref.freq if w.policy == "lfu"
                                              else pair.ref.last_step)))
            pair.erase_if(what=what, below=score)
    # Whole-table passes: export (all, and by predicate), import, grow.
    totals["export_chunks"] += pair.export_all(w.capacity // 3 + 1, 0, 0, what=w.name)
    pair.export_all(7, 2, 1, what=w.name)
    pair.export_all(0, 0, 0, what=w.name)
    rows = tbl.Rows.concat(list(tbl.export(pair.spec, pair.ref, chunk_size=w.capacity // 4)))
    pick = rng.permutation(len(rows.keys))[: max(1, len(rows.keys) // 3)]
    fresh = _universe(rng, 64)
    keys = np.concatenate([rows.keys[pick], fresh, rows.keys[pick[:2]],
                           [h.PADDING_ID, h.ERASED_KEY]]).astype(np.int64)
    m = len(keys)
    width = rows.opt_state.shape[1]
    new = tbl.Rows(keys, rng.normal(size=(m, w.dim)).astype(np.asarray(rows.values).dtype),
                   rng.normal(size=(m, width)).astype(np.float32),
                   rng.integers(0, 50, size=m).astype(np.int64),
                   rng.integers(0, 50, size=m).astype(np.int64))
    slots, status = pair.import_rows(new, what=w.name)
    totals["imported"] += int(np.asarray(status)[1:3].sum())  # inserted + overwritten
    pair.grow(2 * w.capacity, what=w.name)
    return totals


# ---------------------------------------------------------------- tests


def test_cuda_extension_is_loaded():
    if not ON_GPU:
        pytest.skip("HYPERECA_TEST_TARGET=cpu: no CUDA extension to check")
    try:
        import jax_hypereca._hypereca_cuda as cuda_module
    except ImportError as e:  # _native swallows this; show it here
        pytest.fail(f"the CUDA extension jax_hypereca._hypereca_cuda failed to import: {e}")
    assert _native.has_platform("CUDA"), "CUDA targets were not registered"
    info = cuda_module.build_info()
    assert info["platform"] == "cuda"
    assert set(cuda_module.registrations()) == set(_native.cpu.registrations())
    assert cuda_module.constants() == _native.cpu.constants()


@pytest.mark.parametrize("w", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_random_workload_matches_cpu_bit_for_bit(w):
    totals = Counter()
    for seed in (11, 2024):
        totals += run_workload(w, seed)
    # The workload really exercised the paths it is meant to.
    for name in w.expect:
        assert totals[name] > 0, f"{w.name}: no '{name}' in {dict(totals)}"
    if w.erase_every:
        assert totals["erase_calls"] > 0 and totals["erased"] > 0
    assert totals["nonfinite"] > 0 and totals["imported"] > 0


def test_duplicates_padding_reserved_and_eviction_cap():
    spec = tbl.TableSpec(name="t", dim=4, capacity=16, bucket_size=4, optimizer=h.Adagrad(),
                         policy="lru", initializer=h.uniform(0.5), seed=7)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    pair = Pair(spec, state)
    ids = np.array([5, 7, 5, -1, 9, -2, 5, 7, 11, 13, 5, -1], np.int64)
    res = pair.insert(ids, 1, 1, len(ids), what="first")
    found = np.asarray(res.found)
    assert not found.any()
    assert insert_status_dict(res.status)["queries"] == 10
    res = pair.insert(ids, 2, 2, len(ids), what="second")
    assert np.asarray(res.found)[[0, 1, 2, 4]].all()
    # Overfill with a small eviction budget: the cap refuses in query order.
    many = np.arange(100, 160, dtype=np.int64)
    for e in (0, 1, 5, 17, 60, 61):
        res = pair.insert(many + 1000 * e, 10 + e, 10 + e, e, what=f"cap E={e}")
    assert insert_status_dict(res.status)["evicted"] > 0


def test_empty_and_all_padding_batches():
    spec = tbl.TableSpec(name="t", dim=3, capacity=32, bucket_size=8, dtype=jnp.bfloat16,
                         optimizer=h.RowwiseAdagrad(), seed=3)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    pair = Pair(spec, state)
    pair.insert(np.arange(1, 20, dtype=np.int64), 1, 1, 19, what="fill")
    pair.insert(np.full(9, h.PADDING_ID, np.int64), 2, 2, 9, what="all padding")
    pair.insert(np.full(5, h.PADDING_ID, np.int64), 3, 3, 0, what="all padding, E=0")
    pair.insert(np.zeros(0, np.int64), 4, 4, 0, what="empty batch")
    pair.insert(np.zeros(0, np.int64), 4, 4, 3, what="empty batch, E=3")
    pair.find(np.zeros(0, np.int64), miss_init=True, what="empty find")
    pair.gather(np.zeros(0, np.int32), what="empty gather")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("dim", [1, 2, 3, 4, 8, 33])
def test_find_and_gather_all_row_widths(dtype, dim):
    """Every vector width of the row copies (2, 4, 8 and 16 bytes)."""
    spec = tbl.TableSpec(name="t", dim=dim, capacity=256, bucket_size=16, dtype=dtype,
                         optimizer=h.SGD(), initializer=h.normal(0.5), seed=dim)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    pair = Pair(spec, state)
    ids = np.arange(0, 400, 3, dtype=np.int64)
    res = pair.insert(ids, 1, 1, len(ids), what=f"dim={dim}")
    probe = np.concatenate([ids[::2], np.arange(10_000, 10_050), [-1, -2]]).astype(np.int64)
    pair.find(probe, miss_init=False, what=f"dim={dim}")
    pair.find(probe, miss_init=True, what=f"dim={dim}")
    pair.gather(np.concatenate([np.asarray(res.slots), [-1, 256, 255, 0]]).astype(np.int32),
                what=f"dim={dim}")


def test_shape_errors_match_cpu():
    spec = tbl.TableSpec(name="t", dim=4, capacity=64, bucket_size=4)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    msgs = []
    for dev in (CPU, TARGET):
        st = put(state, dev)
        ids = put(np.arange(5, dtype=np.int64), dev)
        errs = []
        for call in (
            lambda: _ops.find(st.keys, st.values, ids, seed=0, init_kind=0, init_scale=0.1,
                              bucket_size=3, miss_init=False),
            lambda: _ops.find_or_insert(tuple(st), ids, put(np.int64(1), dev),
                                        put(np.int64(1), dev),
                                        put(np.zeros(0, np.float32), dev), seed=0,
                                        init_kind=0, init_scale=0.1, policy=0, bucket_size=3,
                                        max_evictions=5),
            lambda: _ops.find_or_insert(tuple(st), ids, put(np.int64(1), dev),
                                        put(np.int64(1), dev),
                                        put(spec.optimizer.initial_state(4), dev), seed=0,
                                        init_kind=0, init_scale=0.1, policy=2, bucket_size=4,
                                        max_evictions=5),
        ):
            with pytest.raises(Exception) as info, jax.default_device(dev):
                jax.block_until_ready(call())
            errs.append(str(info.value))
        msgs.append(errs)
    expected = ("hypereca_find: bucket_size must be a power of two <= 65536 dividing the "
                "capacity 64 (got 3)",
                "hypereca_find_or_insert: bucket_size must be a power of two <= 65536 "
                "dividing the capacity 64 (got 3)",
                "hypereca_find_or_insert: attribute policy = 2 is not one of 0 (lru), 1 (lfu)")
    for cpu_msg, dut_msg, want in zip(msgs[0], msgs[1], expected):
        assert want in cpu_msg, cpu_msg
        assert want in dut_msg, dut_msg


def _both_devices(fn, *args):
    """fn(*args) with the numpy args on the CPU and on the target."""
    outs = []
    for dev in (CPU, TARGET):
        with jax.default_device(dev):
            outs.append(fn(*(put(a, dev) for a in args)))
    return outs


@pytest.mark.parametrize("n", [0, 1, 37, 5000, 70000])
def test_unique_matches_cpu(n):
    rng = np.random.default_rng(n)
    keys = _draw(rng, _universe(rng, max(8, n // 3)), n, 1.1, padding=0.1, reserved=0.02)
    ref, got = _both_devices(_unique, keys)
    for name, a, b in zip(("unique", "inverse", "count"), ref, got):
        assert_same(a, b, f"unique n={n}: {name}")


@pytest.mark.parametrize("n,shards,cap", [(0, 4, 3), (1, 1, 1), (300, 8, 50), (300, 8, 30),
                                          (20000, 3, 9000), (20000, 64, 200)])
def test_bucketize_matches_cpu(n, shards, cap):
    rng = np.random.default_rng(n + shards)
    keys = _draw(rng, _universe(rng, max(8, n)), n, 0.8, padding=0.1, reserved=0.02)
    fn = functools.partial(_bucketize, num_shards=shards, capacity=cap)
    ref, got = _both_devices(fn, keys)
    for name, a, b in zip(("send", "counts", "position"), ref, got):
        assert_same(a, b, f"bucketize n={n} W={shards} cap={cap}: {name}")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("num_tables,dim", [(1, 8), (3, 5), (70, 4)])
def test_gather_tagged_matches_cpu(dtype, num_tables, dim):
    """Bad tags and slots give zeros; more tables than one launch carries."""
    rng = np.random.default_rng(num_tables * 10 + dim)
    caps = rng.integers(1, 40, size=num_tables)
    tables = [rng.normal(size=(int(c), dim)).astype(np.float32) for c in caps]
    n = 3000
    tags = rng.integers(-2, num_tables + 2, size=n).astype(np.int32)
    slots = rng.integers(-2, 45, size=n).astype(np.int32)
    outs = []
    for dev in (CPU, TARGET):
        with jax.default_device(dev):
            tabs = [put(t, dev).astype(dtype) for t in tables]
            outs.append(_gather_tagged(put(tags, dev), put(slots, dev), tabs))
    assert_same(outs[0], outs[1], f"gather_tagged T={num_tables} dim={dim}")


def test_apply_hot_slot_sums_deterministically():
    """A slot with thousands of gradient rows (a hot id) and a run that
    crosses many windows: the GPU sums long runs in a fixed tree (close to the
    CPU's order, identical from run to run); short runs stay bit-identical."""
    spec = tbl.TableSpec(name="t", dim=33, capacity=256, bucket_size=16,
                         optimizer=h.RowwiseAdagrad(), seed=5)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    pair = Pair(spec, state)
    ids = np.arange(1, 120, dtype=np.int64)
    res = pair.insert(ids, 1, 1, len(ids), what="fill")
    live = np.asarray(res.slots)
    live = live[live >= 0]
    assert len(live) > 100
    rng = np.random.default_rng(0)
    hot = np.full(5000, live[0], np.int32)
    warm = np.full(250, live[1], np.int32)   # <= 256 rows: exact
    rest = rng.choice(live[2:], size=3000).astype(np.int32)
    slots = rng.permutation(np.concatenate([hot, warm, rest])).astype(np.int32)
    grads = rng.normal(size=(len(slots), spec.dim)).astype(np.float32)
    outs = []
    for dev in (CPU, TARGET, TARGET):
        with jax.default_device(dev):
            st = put(pair.ref, dev)
            outs.append(_apply(spec, st, put(slots, dev), put(grads, dev),
                               step=put(np.int64(1), dev)))
    (ref_st, ref_status), (a_st, a_status), (b_st, _) = outs
    assert_same(ref_status, a_status, "status")
    for name in tbl.TableState._fields:  # the GPU is deterministic
        assert_same(getattr(a_st, name), getattr(b_st, name), f"rerun: {name}")
    ref_v, got_v = np.asarray(ref_st.values), np.asarray(a_st.values)
    others = np.setdiff1d(np.arange(spec.capacity), [live[0]])
    assert_same(ref_v[others], got_v[others], "rows of short runs")
    assert_same(ref_st.opt_state[others], a_st.opt_state[others], "state of short runs")
    assert_close(ref_v[live[0]], got_v[live[0]], "the hot row")
    assert_close(ref_st.opt_state[live[0]], a_st.opt_state[live[0]], "the hot row's state",
                 rtol=1e-4)


@pytest.mark.parametrize("opt", [h.SGD(learning_rate=1.0), h.Adam(learning_rate=1e-3)],
                         ids=["sgd", "adam"])
def test_apply_flushes_denormals_as_the_cpu(opt):
    """XLA runs CPU handlers with denormals flushed to zero; the GPU update
    is compiled to flush them too (a gradient of 1e-39, and Adam moments that
    decay below 2^-126 in a column whose gradient stays 0)."""
    spec = tbl.TableSpec(name="t", dim=4, capacity=64, bucket_size=16, optimizer=opt,
                         initializer=h.constant(0.0), seed=1)
    with jax.default_device(CPU):
        state = tbl.init_table(spec)
    pair = Pair(spec, state)
    res = pair.insert(np.arange(1, 9, dtype=np.int64), 1, 1, 8, what="fill")
    slots = np.asarray(res.slots).astype(np.int32)
    grads = np.zeros((len(slots), spec.dim), np.float32)
    grads[:, 0] = 1e-39                      # denormal gradient
    grads[:, 1] = np.float32(2.0 ** -120)    # tiny, squares underflow
    grads[0, 2] = np.float32(2.0 ** -120)    # once, then zero: moments decay
    for step in range(8 if isinstance(opt, h.SGD) else 40):
        pair.apply(slots, grads, step, what=f"step {step}")
        grads[0, 2] = 0.0
        grads[:, 3] = np.float32(1e-38) * (step % 3)


_SANITIZER_SCRIPT = r"""
import numpy as np, jax, jax.numpy as jnp
import jax_hypereca as h
gpu = jax.devices("gpu")[0]
def put(x):
    x = np.asarray(x)
    with jax.default_device(gpu):
        return jnp.asarray(x, dtype=x.dtype)
rng = np.random.default_rng(0)
with jax.default_device(gpu):
    for dtype, dim, opt, bucket, cap, policy in [
            (jnp.float32, 4, h.SGD(), 4, 64, "lru"),
            (jnp.bfloat16, 3, h.RowwiseAdagrad(), 32, 256, "lfu"),
            (jnp.float32, 5, h.Adagrad(), 128, 512, "lfu"),
            (jnp.bfloat16, 8, h.Adagrad(), 1, 16, "lru")]:
        spec = h.TableSpec(name="t", dim=dim, capacity=cap, bucket_size=bucket, dtype=dtype,
                           optimizer=opt, policy=policy)
        st = h.init_table(spec)
        for step in range(1, 4):
            ids = rng.integers(0, 3 * cap, size=cap).astype(np.int64)
            ids[::7] = -1
            ids[::11] = -2
            for e in (None, cap // 8):
                st, res = h.find_or_insert(spec, st, put(ids), step=put(np.int64(step)),
                                           pin_from=put(np.int64(step - 1)), max_evictions=e)
            rows, found = h.find(spec, st, put(ids), miss_init=True)
            slots = np.concatenate([np.asarray(res.slots), [-1, cap, cap - 1]]).astype(np.int32)
            got, bad = h.gather(st, put(slots), with_status=True)
            assert int(bad) == 1, int(bad)  # the slot `cap`
            grads = rng.normal(size=(len(slots), dim)).astype(np.float32)
            st, status = h.apply_gradients(spec, st, put(slots), put(grads), step=step)
            st, erased = h.erase(spec, st, put(ids[:cap // 4]))
            st, count = h.erase_if(spec, st, below=step - 2)
            exported = list(h.export(spec, st, chunk_size=cap // 3))
            st2 = h.grow(spec, st, 2 * cap)
            u = h.unique(put(ids))
            jax.block_until_ready((st, st2, res, rows, found, got, status, erased, count, u))
print("SANITIZER_SCRIPT_OK", flush=True)
"""


def _compute_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for cand in ("/usr/local/cuda/bin/compute-sanitizer",
                 "/usr/local/cuda/compute-sanitizer/compute-sanitizer"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def test_memcheck_clean(tmp_path):
    """The ops under compute-sanitizer memcheck (every XLA buffer its own
    allocation, so out-of-bounds accesses hit unallocated memory)."""
    if not ON_GPU:
        pytest.skip("HYPERECA_TEST_TARGET=cpu: memcheck needs a GPU")
    tool = _compute_sanitizer()
    if tool is None:
        pytest.skip("compute-sanitizer not found (PATH, /usr/local/cuda/bin)")
    script = tmp_path / "memcheck_ops.py"
    script.write_text(textwrap.dedent(_SANITIZER_SCRIPT))
    env = dict(os.environ, XLA_PYTHON_CLIENT_ALLOCATOR="platform",
               XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    timeout = int(os.environ.get("HYPERECA_MEMCHECK_TIMEOUT", "420"))
    cmd = [tool, "--tool", "memcheck", "--error-exitcode", "1", "--report-api-errors", "no",
           "--print-limit", "20", sys.executable, str(script)]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.skip(f"compute-sanitizer memcheck did not finish within {timeout} s "
                    f"(HYPERECA_MEMCHECK_TIMEOUT)")
    out = proc.stdout + proc.stderr
    for refusal in ("Device not supported", "not supported on this", "Unable to connect",
                    "Target application terminated before first instrumented API call"):
        if refusal in out and "SANITIZER_SCRIPT_OK" not in out:
            pytest.skip(f"compute-sanitizer refused the device: {out[-1500:]}")
    assert proc.returncode == 0 and "SANITIZER_SCRIPT_OK" in out, out[-6000:]
    assert "ERROR SUMMARY: 0 errors" in out, out[-6000:]
