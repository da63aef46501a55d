"""Builds and runs the native unit tests of the XLA-free core with the host
compiler, and checks the numpy twins against the native values."""

import pathlib
import shutil
import subprocess

import numpy as np
import pytest

import jax_hypereca as h
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
