"""The pipelined train loop (pipeline.py): steps dispatched ahead of their
checks give exactly the synchronous loop's result, and the loader thread
(stage A) surfaces errors and shuts down cleanly."""

import threading
import time

import numpy as np
import pytest

import golden_workload
from conftest import slow_case
import jax_hypereca as h

RECORDED = golden_workload.__file__.replace("golden_workload.py", "data/golden_step50.npz")


@pytest.mark.parametrize("depth,route_ahead", [pytest.param(2, False, marks=slow_case),
                                               (3, True)])
def test_pipelined_steps_end_bit_identical_to_the_synchronous_loop(depth, route_ahead):
    """The golden workload (eviction, refused inserts and growth, overflow
    re-runs, capacity re-fits, a hot fold re-planned mid-run, three
    optimizers) through a pipeline of `depth`, each step routing the next
    batch's ids or its own: every step in order, and the recording of the
    synchronous loop bit for bit."""
    want = np.load(RECORDED)
    got = golden_workload.run(depth=depth, route_ahead=route_ahead)
    # with route_ahead every step but the first after each flush had its ids
    # routed by the one before
    routed = golden_workload.STEPS - 1 - len(golden_workload.HOT) if route_ahead else 0
    assert got["routed_ahead"] >= routed and (route_ahead or got["routed_ahead"] == 0)
    assert want["a/cold/counters"][2] > 0 and want["b/cold/counters"][5] > 0  # evicted, refused
    for name in want.files:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _loader_threads():
    return [t for t in threading.enumerate() if t.name == "test-loader" and t.is_alive()]


def test_prefetch_error_surfaces_with_its_traceback():
    def batches():
        yield 1
        yield 2
        raise ValueError("bad line 3")

    got, t0 = [], time.perf_counter()
    with pytest.raises(ValueError, match="bad line 3") as info:
        for b in h.prefetch(batches(), 2, lambda x: x * 10, name="test-loader"):
            got.append(b)
    assert got == [10, 20] and time.perf_counter() - t0 < 5
    assert any("batches" in str(tb.name) for tb in info.traceback)  # the thread's frames
    time.sleep(0.2)
    assert not _loader_threads()


def test_prefetch_closed_early_leaves_no_thread():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    it = h.prefetch(endless(), 3, name="test-loader")
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]  # in order, none skipped
    it.close()
    assert not _loader_threads()


def test_pipeline_refuses_depth_zero():
    coll = golden_workload.h.EmbeddingCollection(
        golden_workload.TABLES, golden_workload.FEATURES, mesh=h.make_mesh())
    step = coll.make_train_step(golden_workload.head_loss, golden_workload.TX)
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        h.TrainPipeline(step, depth=0)


def test_profile_attributes_compiled_ops_to_their_stage():
    """bench_pipeline's breakdown reads each op's stage from the compiled
    HLO's metadata (the stage_* named scopes)."""
    import jax
    import jax.numpy as jnp

    from experiments.bench_pipeline import op_stages

    def f(x):
        with jax.named_scope("stage_dense"):
            y = jnp.tanh(x @ x)
        with jax.named_scope("stage_apply"):
            return jnp.sort(y, axis=0)

    stages = op_stages(jax.jit(f).lower(jnp.ones((8, 8))).compile().as_text())
    assert {"dense", "apply"} <= set(stages.values())
