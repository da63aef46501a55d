"""Builds and runs the native unit tests of the XLA-free core with the host
compiler, and checks the numpy twins and the Python enums against the native
values."""

import pathlib
import shutil
import subprocess
import typing

import jax
import numpy as np
import pytest

import jax_hypereca as h
from jax_hypereca import _native, _ops, initializers, optim
from jax_hypereca import table as tbl
from jax_hypereca.hashing import bucket_of, mix64, owner_of

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def native_output(tmp_path_factory) -> list[str]:
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    exe = tmp_path_factory.mktemp("native") / "core_test"
    subprocess.run([cxx, "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'ffi/include'}",
                    str(ROOT / "ffi/tests/core_test.cc"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def test_native_unit_tests_pass(native_output):
    assert native_output[-1] == "ok"


def test_numpy_twins_match_native(native_output):
    checked = 0
    for line in native_output:
        kind, *vals = line.split()
        if kind == "mix64":
            k, want = int(vals[0]), int(vals[1])
            assert int(mix64(np.asarray(k, np.int64).view(np.uint64))) == want
        elif kind == "owner":
            assert int(owner_of(np.asarray([int(vals[0])]), 7)[0]) == int(vals[1])
        elif kind == "bucket":
            assert int(bucket_of(np.asarray([int(vals[0])]), 1000)[0]) == int(vals[1])
        elif kind == "init":
            k, c = int(vals[0]), int(vals[1])
            u = h.init_rows(42, np.asarray([k]), 3, h.uniform(0.5))[0, c]
            n = h.init_rows(42, np.asarray([k]), 3, h.normal(2.0))[0, c]
            assert u == np.float32(vals[2]) and n == np.float32(vals[3])
        else:
            continue
        checked += 1
    assert checked == 6 * 6


def _header_enums(native_output) -> dict[str, dict[str, int]]:
    """The selector enumerations of enums.h, as core_test prints them."""
    enums: dict[str, dict[str, int]] = {}
    for line in native_output:
        kind, *vals = line.split()
        if kind == "enum":
            enums.setdefault(vals[0], {})[vals[1]] = int(vals[2])
    return enums


def _literal_names(cls, field: str) -> set[str]:
    return set(typing.get_args(typing.get_type_hints(cls)[field]))


def test_python_enums_are_the_native_ones(native_output):
    header = _header_enums(native_output)
    assert set(header) == {"POLICIES", "INIT_KINDS", "OPTIMIZERS", "EXPORT_MODES"}
    for name, values in header.items():
        assert _native.CONSTANTS[name] == values, name
        if _native.cuda is not None:  # built here even without a GPU to run it
            assert _native.cuda.constants()[name] == values, name
    # What the Python package passes to the ops.
    assert tbl._POLICIES == header["POLICIES"]
    assert _literal_names(tbl.TableSpec, "policy") == set(header["POLICIES"])
    assert {p: tbl.TableSpec(name="t", dim=4, capacity=64, policy=p).policy_code
            for p in header["POLICIES"]} == header["POLICIES"]
    assert initializers._KINDS == header["INIT_KINDS"]
    assert _literal_names(h.Initializer, "kind") == set(header["INIT_KINDS"])
    assert {k: h.Initializer(kind=k).code for k in header["INIT_KINDS"]} == header["INIT_KINDS"]
    modes = header["EXPORT_MODES"]
    assert tbl._predicate(None, None, "export")[0] == modes["all"]
    assert tbl._predicate(5, None, "export")[0] == modes["below"]
    assert tbl._predicate(None, 5, "export")[0] == modes["at_least"]
    classes = {"sgd": optim.SGD, "adagrad": optim.Adagrad,
               "rowwise_adagrad": optim.RowwiseAdagrad, "adam": optim.Adam, "ftrl": optim.FTRL}
    assert {name: cls.kind for name, cls in classes.items()} == header["OPTIMIZERS"]
    assert set(optim.Optimizer.__subclasses__()) == set(classes.values())


def _valid_values(table: str) -> str:
    return ", ".join(f"{v} ({k})" for k, v in _native.CONSTANTS[table].items())


def test_out_of_range_enums_are_refused():
    # The public layer takes names and refuses unknown ones before any op runs.
    with pytest.raises(ValueError, match="policy must be one of 'lru', 'lfu', got 'mru'"):
        tbl.TableSpec(name="t", dim=4, capacity=64, policy="mru")
    with pytest.raises(ValueError, match="Initializer.kind must be one of"):
        h.Initializer(kind="zeros")
    # The native layer refuses numbers outside the enumeration, naming the op,
    # the attribute, the value and the valid values (one check for CPU and CUDA).
    spec = tbl.TableSpec(name="t", dim=4, capacity=64, bucket_size=4)
    st = tbl.init_table(spec)
    ids = np.arange(5, dtype=np.int64)
    opt_init = spec.optimizer.initial_state(spec.dim)

    def insert(init_kind=0, policy=0):
        return _ops.find_or_insert(tuple(st), ids, 1, 1, opt_init, seed=0, init_kind=init_kind,
                                   init_scale=0.1, policy=policy, bucket_size=4,
                                   max_evictions=5)

    cases = [
        (lambda: insert(init_kind=3), "hypereca_find_or_insert", "init_kind", 3, "INIT_KINDS"),
        (lambda: insert(policy=2), "hypereca_find_or_insert", "policy", 2, "POLICIES"),
        (lambda: _ops.find(st.keys, st.values, ids, seed=0, init_kind=-1, init_scale=0.1,
                           bucket_size=4, miss_init=True),
         "hypereca_find", "init_kind", -1, "INIT_KINDS"),
        (lambda: _ops.apply_gradients(st.values, st.opt_state, st.counters,
                                      np.zeros(2, np.int32), np.zeros((2, 4), np.float32),
                                      np.zeros(8, np.float32), optimizer=5),
         "hypereca_apply_gradients", "optimizer", 5, "OPTIMIZERS"),
        (lambda: _ops.erase_if(st.keys, st.last_step, st.freq, st.counters, 0, bucket_size=4,
                               mode=3, policy=0),
         "hypereca_erase_if", "mode", 3, "EXPORT_MODES"),
        (lambda: _ops.erase_if(st.keys, st.last_step, st.freq, st.counters, 0, bucket_size=4,
                               mode=0, policy=-1),
         "hypereca_erase_if", "policy", -1, "POLICIES"),
        (lambda: _ops.export(st.keys, st.values, st.opt_state, st.last_step, st.freq, 0, 0,
                             chunk=8, mode=-1, policy=0),
         "hypereca_export", "mode", -1, "EXPORT_MODES"),
    ]
    for call, op, attr, value, table in cases:
        with pytest.raises(Exception) as info:
            jax.block_until_ready(call())
        want = f"{op}: attribute {attr} = {value} is not one of {_valid_values(table)}"
        assert want in str(info.value), str(info.value)
