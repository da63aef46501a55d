"""The middle layers keep behaviour bit for bit: the fixed workload of
golden_workload.py (eviction, insert refusals and growth, overflow re-runs,
a hot fold planned and re-planned, three optimizers) ends at exactly the
losses, dense parameters, rows, optimizer state, scores and counters that the
code before the refactor recorded."""

import pathlib

import numpy as np

import golden_workload

RECORDED = pathlib.Path(__file__).parent / "data" / "golden_step50.npz"


def test_fifty_steps_end_bit_identical_to_the_recording():
    want = np.load(RECORDED)
    got = golden_workload.run()
    assert sorted(got) == sorted(want.files)
    assert want["a/cold/counters"][2] > 0 and want["b/cold/counters"][5] > 0  # evicted, refused
    for name in want.files:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
