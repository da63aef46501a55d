"""The harness of the CUDA tests (test_ops_cuda.py, test_step_cuda.py): the
device checked against the CPU -- the first GPU JAX sees, or with
HYPERECA_TEST_TARGET=cpu another CPU device (a check of the harness on
machines without a GPU), None where there is neither -- the bit-for-bit and
float comparisons, and Pair, one table shard driven through the same calls
on both devices."""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_hypereca as h
from jax_hypereca import _ops
from jax_hypereca import table as tbl
from jax_hypereca.errors import insert_status_dict

SKIP_REASON = ("no GPU visible to JAX (jax.devices('gpu') is empty): the CUDA custom calls "
               "are checked on a CUDA machine by tools/gpu_check.sh")


def _target_device():
    if os.environ.get("HYPERECA_TEST_TARGET") == "cpu":
        return jax.devices("cpu")[-1]
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        return None
    return gpus[0] if gpus else None


TARGET = _target_device()
CPU = jax.devices("cpu")[0]
ON_GPU = TARGET is not None and TARGET.platform != "cpu"


def skip_without_target() -> None:
    """Skips the calling test module where there is no target device."""
    if TARGET is None:
        pytest.skip(SKIP_REASON, allow_module_level=True)


def put(x, dev):
    """x (an array or a pytree of arrays) on `dev`, int64 kept int64.

    Goes through numpy and jnp.asarray with the explicit dtype: without
    jax_enable_x64, device_put of numpy narrows int64 to int32, and on jax
    0.11.2 a cross-device device_put of an int64 jax.Array was seen to yield
    an s32 buffer behind an s64 array. The result is uncommitted: run every
    call on it under `jax.default_device(dev)`.
    """
    if isinstance(x, tuple):  # TableState and other NamedTuples of arrays
        return type(x)(*(put(a, dev) for a in x))
    arr = np.asarray(x)
    with jax.default_device(dev):
        out = jnp.asarray(arr, dtype=arr.dtype)
    assert out.dtype == arr.dtype, (out.dtype, arr.dtype)
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    if a.dtype == jnp.bfloat16:
        return a.view(np.uint16)
    if a.dtype == np.float32:
        return a.view(np.uint32)
    return a


def assert_same(ref, got, what: str):
    ref_a, got_a = np.asarray(ref), np.asarray(got)
    assert got_a.dtype == ref_a.dtype, f"{what}: dtype {got_a.dtype} != {ref_a.dtype}"
    assert got_a.shape == ref_a.shape, f"{what}: shape {got_a.shape} != {ref_a.shape}"
    eq = _bits(got_a) == _bits(ref_a)
    if not np.all(eq):
        bad = np.argwhere(~eq)
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{what}: {len(bad)} of {eq.size} elements differ; first at {first}: "
            f"target {got_a[first]!r} vs cpu {ref_a[first]!r}")


def assert_close(ref, got, what: str, rtol=2e-5, atol=1e-6):
    ref_a = np.asarray(ref).astype(np.float64)
    got_a = np.asarray(got).astype(np.float64)
    assert got_a.shape == ref_a.shape, f"{what}: shape {got_a.shape} != {ref_a.shape}"
    np.testing.assert_allclose(got_a, ref_a, rtol=rtol, atol=atol, err_msg=what)


# ------------------------------------------------- one table on both devices


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_evictions",))
def _foi(spec, state, ids, step, pin_from, *, max_evictions):
    return tbl.find_or_insert(spec, state, ids, step=step, pin_from=pin_from,
                              max_evictions=max_evictions)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("max_evictions",),
                   donate_argnums=(1,))
def _foi_donated(spec, state, ids, step, pin_from, *, max_evictions):
    return tbl.find_or_insert(spec, state, ids, step=step, pin_from=pin_from,
                              max_evictions=max_evictions)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("miss_init", "with_rows"))
def _find(spec, state, ids, *, miss_init, with_rows=True):
    # The op itself (table.find drops the slots; compare them too).
    return _ops.find(state.keys, state.values, ids, seed=spec.seed,
                     init_kind=spec.initializer.code, init_scale=spec.initializer.scale,
                     bucket_size=tbl._bucket_size(spec, state), miss_init=miss_init,
                     with_rows=with_rows)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("miss_init",))
def _find_public(spec, state, ids, *, miss_init):
    return tbl.find(spec, state, ids, miss_init=miss_init)


_gather = jax.jit(functools.partial(tbl.gather, with_status=True))
_apply = jax.jit(tbl.apply_gradients, static_argnums=(0,))
_erase = jax.jit(tbl.erase, static_argnums=(0,))
_erase_if = jax.jit(tbl.erase_if, static_argnums=(0,), static_argnames=("below", "at_least"))
_export_chunk = jax.jit(
    lambda st, cursor, thr, chunk, mode, policy: _ops.export(
        st.keys, st.values, st.opt_state, st.last_step, st.freq, cursor, thr, chunk=chunk,
        mode=mode, policy=policy),
    static_argnums=(3, 4, 5))
_import = jax.jit(tbl.import_rows, static_argnums=(0,))


class Pair:
    """The same table shard on the reference CPU device and on the target."""

    def __init__(self, spec: tbl.TableSpec, state: tbl.TableState):
        self.spec = spec
        self.ref = put(state, CPU)
        self.dut = put(state, TARGET)

    @property
    def rounding(self) -> bool:
        """Whether float state may differ in the last bits (Adam's powf)."""
        return isinstance(self.spec.optimizer, h.Adam)

    def same(self, a, b, what: str):
        """Bit-identical, or for Adam's floats within rounding."""
        dtype = np.asarray(a).dtype
        if self.rounding and (dtype.kind == "f" or dtype == jnp.bfloat16):
            assert_close(a, b, what)
        else:
            assert_same(a, b, what)

    def check_tables(self, what: str):
        for name, a, b in zip(tbl.TableState._fields, self.ref, self.dut):
            self.same(a, b, f"{what}: table.{name}")

    def insert(self, ids, step, pin_from, max_evictions, *, donate=False, what=""):
        fn = _foi_donated if donate else _foi
        outs = []
        for dev, state in ((CPU, self.ref), (TARGET, self.dut)):
            with jax.default_device(dev):
                outs.append(fn(self.spec, state, put(np.asarray(ids, np.int64), dev),
                               put(np.int64(step), dev), put(np.int64(pin_from), dev),
                               max_evictions=max_evictions))
        (ref_state, ref_res), (dut_state, dut_res) = outs
        for res, dev in ((ref_res, CPU), (dut_res, TARGET)):  # ran where intended
            assert res.status.devices() == {dev}, (res.status.devices(), dev)
        self.ref, self.dut = ref_state, dut_state
        assert_same(ref_res.status, dut_res.status, f"{what}: status")
        assert_same(ref_res.slots, dut_res.slots, f"{what}: slots")
        assert_same(ref_res.found, dut_res.found, f"{what}: found")
        count = insert_status_dict(ref_res.status)["evicted"]
        for name, a, b in zip(tbl.EvictedRows._fields, ref_res.evicted, dut_res.evicted):
            if name in ("values", "opt_state"):  # unspecified past the count
                a, b = np.asarray(a)[:count], np.asarray(b)[:count]
            self.same(a, b, f"{what}: evicted.{name}")
        self.check_tables(what)
        return ref_res

    def _both(self, fn):
        outs = []
        for dev, st in ((CPU, self.ref), (TARGET, self.dut)):
            with jax.default_device(dev):
                outs.append(fn(dev, st))
        return outs

    def find(self, ids, miss_init, what=""):
        ids = np.asarray(ids, np.int64)
        outs = self._both(lambda dev, st: _find(self.spec, st, put(ids, dev),
                                                miss_init=miss_init))
        for name, a, b in zip(("rows", "slots", "found"), *outs):
            self.same(a, b, f"{what}: find(miss_init={miss_init}).{name}")
        with jax.default_device(TARGET):
            pub = _find_public(self.spec, self.dut, put(ids, TARGET), miss_init=miss_init)
        self.same(outs[0][0], pub[0], f"{what}: table.find rows")
        assert_same(outs[0][2], pub[1], f"{what}: table.find found")
        # rows (0, dim): slots and found only (table.find_slots).
        slim = self._both(lambda dev, st: _find(self.spec, st, put(ids, dev), miss_init=False,
                                                with_rows=False))
        for name, a, b in zip(("rows", "slots", "found"), *slim):
            assert_same(a, b, f"{what}: find(with_rows=False).{name}")
        assert_same(outs[0][1], slim[1][1], f"{what}: find slots with and without rows")

    def gather(self, slots, what=""):
        slots = np.asarray(slots, np.int32)
        outs = self._both(lambda dev, st: _gather(st, put(slots, dev)))
        self.same(outs[0][0], outs[1][0], f"{what}: gather")
        assert_same(outs[0][1], outs[1][1], f"{what}: gather bad_slots")
        expected = ((slots != -1) & ((slots < 0) | (slots >= self.ref.capacity))).sum()
        assert int(outs[1][1]) == expected, f"{what}: gather bad_slots {outs[1][1]} != {expected}"

    def _run(self, fn, what):
        """fn(dev, state) -> (state, outputs) on both; outputs compared exactly."""
        (ref_state, ref_out), (dut_state, dut_out) = self._both(fn)
        self.ref, self.dut = ref_state, dut_state
        for i, (a, b) in enumerate(zip(jax.tree.leaves(ref_out), jax.tree.leaves(dut_out))):
            assert_same(a, b, f"{what}: output {i}")
        self.check_tables(what)
        return ref_out

    def apply(self, slots, grads, step, what=""):
        slots = np.asarray(slots, np.int32)
        grads = np.asarray(grads, np.float32)
        return self._run(lambda dev, st: _apply(self.spec, st, put(slots, dev), put(grads, dev),
                                                step=put(np.int64(step), dev)),
                         f"{what} apply")

    def erase(self, ids, what=""):
        ids = np.asarray(ids, np.int64)
        return self._run(lambda dev, st: _erase(self.spec, st, put(ids, dev)), f"{what} erase")

    def erase_if(self, what="", **predicate):
        return self._run(lambda dev, st: _erase_if(self.spec, st, **predicate),
                         f"{what} erase_if{predicate}")

    def export_all(self, chunk, mode, threshold, what=""):
        """Chunk by chunk with the op itself: rows and (count, next cursor)."""
        cursor, chunks = 0, 0
        while cursor < self.spec.capacity:
            outs = self._both(lambda dev, st: _export_chunk(
                st, put(np.int64(cursor), dev), put(np.int64(threshold), dev), chunk, mode,
                self.spec.policy_code))
            for name, a, b in zip(tbl.Rows._fields + ("info",), *outs):
                self.same(a, b, f"{what}: export.{name} (cursor {cursor})")
            count, nxt = (int(x) for x in np.asarray(outs[0][-1]))
            assert nxt > cursor or chunk == 0, (cursor, nxt)
            cursor, chunks = nxt, chunks + 1
            if chunk == 0:
                break
        return chunks

    def import_rows(self, rows: tbl.Rows, what=""):
        def fn(dev, st):
            r = tbl.Rows(*(put(np.asarray(x), dev) for x in rows))
            state, slots, status = _import(self.spec, st, r)
            return state, (slots, status)
        return self._run(fn, f"{what} import_rows")

    def grow(self, rows: int, what=""):
        outs = self._both(lambda dev, st: tbl.grow(self.spec, st, rows))
        self.ref, self.dut = outs
        self.spec = dataclasses.replace(self.spec, capacity=rows)
        self.check_tables(f"{what} grow to {rows}")
