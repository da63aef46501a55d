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


def test_route_ahead_across_changing_batch_sizes_ends_as_the_synchronous_loop():
    """Batches of 64, a partial one of 32, then 128 (tables that evict and
    grow, exchange buffers raised by re-runs): a step whose next batch has
    another size routes no ids ahead and that batch routes its own; the run
    ends bit for bit as synchronous steps, every step in order."""
    import test_collection as tc
    import test_training_paths as tp

    batches = tp.b_batches()
    runs = []
    for depth in (None, 2):
        coll = h.EmbeddingCollection(tp.B_SPECS, tc.FEATURES, mesh=h.make_mesh(),
                                     capacity_slack=0.5, capacities={"a": 1, "b": 2, "c": 1},
                                     retune_every=5, max_shard_bytes=7000)
        step = coll.make_train_step(tc.head_loss, tp.TX)
        state = coll.init_train_state(tc.init_params(), tp.TX)
        if depth is None:
            losses = []
            for b in batches:
                state, m = step(state, b)
                losses.append(m["loss"])
        else:
            pipe = h.TrainPipeline(step, depth=depth, route_ahead=True)
            own, route = [], step.route  # batches routed by a program of their own
            step.route = lambda st, b: own.append(len(b["ids"]["fa"])) or route(st, b)
            for b in batches:
                state = pipe.submit(state, b)
            state = pipe.flush(state)
            done = pipe.pop_completed()
            assert [m["step"] for m in done] == list(range(1, len(batches) + 1))
            losses = [m["loss"] for m in done]
            # each size change breaks the chain once: 64 -> 32 -> 128 -> 32
            # the first batch and each one after a size change route their own ids
            # (re-runs re-route too): 64 -> 32 -> 128 -> 32
            changes = iter(own)
            assert all(size in changes for size in (64, 32, 128, 32)), own
            assert step.routed_ahead >= len(batches) - 4
        runs.append((losses, {n: tp.live_rows(state, n) for n in tc.DIMS}))
    (want_losses, want), (got_losses, got) = runs
    assert got_losses == want_losses
    for n in want:
        for w, g in zip(want[n], got[n]):
            np.testing.assert_array_equal(g, w, err_msg=n)


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
