"""The host tier at its limits (tiers.py, pipeline.py): a store too full
for a step's demotions refuses the step before it runs; a settle a store
refuses holds its rows until put_back; a step whose dispatch fails puts
its staged rows back; a refusal while the pipeline re-runs steps hands
back every batch not run -- and each run then ends bit for bit as the one
with an unlimited host tier, every row accounted for (I3)."""

import jax
import numpy as np
import optax
import pytest

import jax_hypereca as h
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.pipeline import TrainPipeline
from jax_hypereca.placement import make_mesh

import test_collection as tc
from test_tiers import BUDGET, assert_same_rows, batches, specs, train  # noqa: F401 (a fixture)


def _limited(limit):
    mesh = make_mesh(jax.devices()[:1])
    probe = EmbeddingCollection(specs(BUDGET[1]), tc.FEATURES, mesh=mesh)
    return EmbeddingCollection(specs(BUDGET[1]), tc.FEATURES, mesh=mesh,
                               max_shard_bytes=probe.shard_bytes(probe.init_tables()),
                               host_tier={"memory_limit_bytes": limit})


def assert_as_unlimited(coll, state, ref, ref_state):
    """Every row as in the unlimited run, each accounted for (I3)."""
    stats = coll.table_stats(state.tables)
    for name in tc.DIMS:
        want = assert_same_rows(coll, state, ref, ref_state, name)
        s = stats[name]
        assert s["inserted"] - s["promoted"] == s["size"] + s["host_rows"] == len(want)


def _host_rows(coll):
    return {n: sorted(coll.host_tier.rows(n).keys.tolist()) for n in tc.DIMS}


def fill_stores(tier, names=None) -> dict[str, list[int]]:
    """Each named store of HostTier `tier` (default: all) filled to its last
    free record with rows of ids the runs never see, then limited to what it
    holds: its next growth is refused (room is made by hash partition with a
    margin, so a limit at what a roomy store holds may refuse nothing).
    Returns the filler ids per table for unfill_stores."""
    filler = {}
    tier.set_memory_limit_bytes(max(max(s.bytes, 1) for s in tier.stores.values()))
    for name in names or tier.stores:
        store, filler[name] = tier.stores[name], []
        store.memory_limit_bytes = max(store.bytes, 1)
        for k in range(-(10**15), -(10**15) + 4096):
            try:
                store.put(np.array([k]), np.zeros((1, store.dim), np.float32),
                          np.zeros((1, store.state_width), np.float32), [0], [0])
                filler[name].append(k)
            except h.HostTierFullError:
                pass
    return filler


def unfill_stores(tier, filler: dict[str, list[int]]) -> None:
    """Undoes fill_stores: the filler rows erased, no limit."""
    for name, ids in filler.items():
        tier.stores[name].erase(np.array(ids, np.int64))
    tier.set_memory_limit_bytes(None)


@pytest.fixture(scope="module")
def unlimited(batches):
    """Six steps with an unlimited host tier: (collection, state, losses)."""
    ref = _limited(None)
    return (ref,) + tuple(train(ref, batches[:6]))


def _limited_start(limit=None):
    """A collection with a host tier (limit: its memory_limit_bytes), its
    train step and initial state."""
    coll = _limited(limit)
    dense_tx = optax.adam(0.01)
    step = coll.make_train_step(tc.head_loss, dense_tx)
    return coll, step, coll.init_train_state(tc.init_params(), dense_tx)


def test_a_full_host_tier_refuses_the_step_before_it_runs_and_training_goes_on(batches,
                                                                               unlimited):
    """A host tier whose limit leaves no room for the demotions a step may
    make: the step raises HostTierFullError before it runs (naming the
    limit, .applied False, .state the state it was given, no row moved); with
    the limit raised the same batch trains, and the run ends bit for bit as
    the one with an unlimited host tier, every row accounted for (I3)."""
    batches = batches[:6]
    ref, ref_state, ref_losses = unlimited
    coll, step, state = _limited_start()
    losses, errors, filler = [], 0, {}
    for i, b in enumerate(batches):
        if i == 3:  # no room beyond what the stores hold now
            filler = fill_stores(coll.host_tier)
        before = _host_rows(coll)
        try:
            state, m = step(state, b)
        except h.HostTierFullError as e:
            errors += 1
            limit = coll.host_tier.memory_limit_bytes
            assert f"memory_limit_bytes={limit}" in str(e) and "not run" in str(e)
            assert e.applied is False and e.state is state and e.rows == {}
            assert _host_rows(coll) == before and coll.host_tier.room == dict.fromkeys(tc.DIMS, 0)
            unfill_stores(coll.host_tier, filler)
            state, m = step(state, b)  # the same batch, now with room
        losses.append(m["loss"])
    assert errors == 1
    assert losses == ref_losses
    assert_as_unlimited(coll, state, ref, ref_state)


def test_a_settle_the_store_refuses_holds_every_row_until_put_back(batches, unlimited):
    """A limit set while a step is in flight (no room was made for it): its
    settle stores what fits, then raises HostTierFullError
    holding every refused row of every table (.rows) and the state after
    the (applied) step; with the limit raised and the rows put back,
    training goes on bit for bit as the unlimited run (I3)."""
    batches = batches[:6]
    ref, ref_state, ref_losses = unlimited
    coll, step, state = _limited_start()
    losses, errors, applied_refused = [], 0, 0
    for i, b in enumerate(batches):
        verdict = None
        while verdict is None or not verdict.ok:  # re-run as ShardedTrainStep.__call__
            state = state if verdict is None else step.repair(state, verdict)
            state, pending = step.dispatch(state, coll.prepare_batch(b), i)
            # a limit at what the stores hold: a settle that must grow one is refused
            coll.host_tier.set_memory_limit_bytes(
                max(s.bytes for s in coll.host_tier.stores.values()))
            try:
                verdict = step.check_holding(state, pending)
            except h.HostTierFullError as e:
                errors += 1
                limit = coll.host_tier.memory_limit_bytes
                assert f"memory_limit_bytes={limit}" in str(e) and "put_back" in str(e)
                assert sum(len(r.keys) for r in e.rows.values()) > 0
                assert all(r.values.shape == (len(r.keys), tc.DIMS[t]) for t, r in e.rows.items())
                with pytest.raises(h.HostTierFullError):  # still too small: held again
                    coll.host_tier.put_back(e.rows)
                coll.host_tier.set_memory_limit_bytes(None)
                coll.host_tier.put_back(e.rows)
                state = e.state
                if e.applied:  # its metrics went with the error
                    applied_refused += 1
                    break
                verdict = None  # not applied (an eviction cap it outgrew): run it again
                continue
            coll.host_tier.set_memory_limit_bytes(None)
        else:
            losses.append(step.finish(state, pending, verdict)["loss"])
            continue
        losses.append(None)
    coll.host_tier.set_memory_limit_bytes(None)
    assert errors >= 1 and applied_refused >= 1
    assert [x for x in losses if x is not None] == [
        x for x, y in zip(ref_losses, losses) if y is not None]
    assert_as_unlimited(coll, state, ref, ref_state)


def test_a_step_whose_dispatch_fails_puts_its_staged_rows_back(batches, unlimited,
                                                                monkeypatch):
    """A step that raises in dispatch after its batch was staged (here: a
    compile error, made to happen) never ran: the rows it took go back to
    the host tier and the room made for its demotions is released; the same
    batch then trains, and the run ends bit for bit as the unlimited one."""
    ref, ref_state, ref_losses = unlimited
    coll, step, state = _limited_start(1 << 30)
    losses = []
    for i, b in enumerate(batches[:6]):
        if i == 4:
            before, room = _host_rows(coll), dict(coll.host_tier.room)
            assert any(before.values())  # rows to stage
            compiled = step.compiled

            def broken(*args):
                def fail(*_, **__):
                    raise RuntimeError("compile failed")
                return fail

            monkeypatch.setattr(step, "compiled", broken)
            with pytest.raises(RuntimeError, match="compile failed"):
                step(state, b)
            assert _host_rows(coll) == before and coll.host_tier.room == room
            monkeypatch.setattr(step, "compiled", compiled)
        state, m = step(state, b)
        losses.append(m["loss"])
    assert losses == ref_losses
    assert_as_unlimited(coll, state, ref, ref_state)


def test_a_step_counts_as_clean_only_when_it_compiled_nothing(batches):
    """Pending.clean (the steps exchange="auto" may time): false whenever the
    dispatch lowered the step anew -- a new layout, and also the same layout
    with more rows staged or read back (jit lowers and compiles, or loads
    from the persistent cache, for the new shapes)."""
    from jax._src import monitoring  # the events jax's own dispatch reports

    compiles = [0]

    def listen(event, duration, fun_name="", **_):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" and "step_fn" in fun_name:
            compiles[0] += 1

    monitoring.register_event_duration_secs_listener(listen)
    try:
        coll, step, state = _limited_start()
        shape_only = 0
        for i, b in enumerate(batches[:8]):
            verdict = None
            while verdict is None or not verdict.ok:
                state = state if verdict is None else step.repair(state, verdict)
                before, programs = compiles[0], step.programs
                state, pending = step.dispatch(state, coll.prepare_batch(b), i)
                compiled = compiles[0] > before
                assert not (pending.clean and compiled), i
                shape_only += compiled and step.programs == programs
                verdict = step.check(pending)
            step.finish(state, pending, verdict)
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert shape_only > 0  # the case the layout count alone missed


def _run_recovering(pipe, state, batches, recover):
    """Submits `batches` to `pipe` and flushes it; a HostTierFullError goes to
    ``recover(error, batches still to submit) -> (state, batches to submit)``
    and the run goes on. Returns (state, the errors)."""
    todo, errors = [pipe.step.c.prepare_batch(b) for b in batches], []
    while True:
        try:
            if todo:
                state = pipe.submit(state, todo.pop(0))
                continue
            return pipe.flush(state), errors
        except h.HostTierFullError as e:
            errors.append(e)
            state, todo = recover(e, todo)


# route_ahead: a batch held back for the next one's submit is handed back too
@pytest.mark.parametrize("flush_first,route_ahead", [(True, None), (False, True)])
def test_a_step_refused_in_a_pipeline_rerun_hands_back_every_batch_not_run(
        batches, unlimited, flush_first, route_ahead):
    """Depth 3: the steps in flight behind a failed one are re-dispatched;
    when the host tier refuses one of them (a limit at what the stores hold,
    set at the first re-dispatch), HostTierFullError holds that batch and
    every later one submitted (``.batches``, ``.step``). With the limit
    raised and those batches submitted again -- after flush(error.state), or
    straight on from error.state with the steps before them still in flight
    -- every step runs once, in order, and the run ends bit for bit as the
    unlimited one."""
    ref, ref_state, ref_losses = unlimited
    coll, step, state = _limited_start()
    pipe = TrainPipeline(step, depth=3, route_ahead=route_ahead)
    repairs, calls, make_room, filler = [0], [0], coll.host_tier._make_room, {}

    def repair_then_arm(s, v, repair=step.repair):
        repairs[0] += bool(v.stale)  # armed by the first stale re-run (the stores hold rows)
        return repair(s, v)

    def room_then_refuse(ids):
        calls[0] += repairs[0] == 1
        if calls[0] == 1:  # its first re-dispatch: no room beyond what the stores hold
            filler.update(fill_stores(coll.host_tier))
        return make_room(ids)

    step.repair, coll.host_tier._make_room = repair_then_arm, room_then_refuse
    done = []

    def recover(e, todo):
        assert e.applied is False and e.rows == {} and len(e.batches) >= 2
        unfill_stores(coll.host_tier, filler)
        assert len(e.batches) + len(todo) == 6 - (e.step - 1)  # none dropped
        state = pipe.flush(e.state) if flush_first else e.state
        if flush_first:
            done.extend(pipe.pop_completed())
            assert [m["step"] for m in done] == list(range(1, e.step))
        return state, list(e.batches) + todo

    state, errors = _run_recovering(pipe, state, batches[:6], recover)
    done += pipe.pop_completed()
    assert len(errors) == 1
    assert [m["step"] for m in done] == list(range(1, 7))
    assert [m["loss"] for m in done] == ref_losses
    assert_as_unlimited(coll, state, ref, ref_state)


def test_staged_rows_cross_as_int32_pairs_where_int64_cannot_cross_whole(batches, unlimited,
                                                                       monkeypatch):
    """Without ``jax.enable_x64`` (the path several processes take) batches
    and staged rows cross one array and device at a time, 64-bit fields of
    the staged rows as int32 pairs the step rebuilds (tiers.unpack): ids
    over the whole int64 range train bit for bit as the one-transfer run."""
    monkeypatch.delattr(jax, "enable_x64")
    ref, ref_state, ref_losses = unlimited
    coll, step, state = _limited_start()
    losses = []
    for b in batches[:6]:
        state, m = step(state, b)
        losses.append(m["loss"])
    assert losses == ref_losses
    assert_as_unlimited(coll, state, ref, ref_state)


def test_a_settle_refused_in_a_pipeline_rerun_goes_on_by_the_first_verdict(batches, unlimited):
    """Depth 3: re-running after a failed step first settles the no-op steps
    behind it; a store that refuses the rows they evicted (as the re-run
    starts, table a's store is filled to its last free record with rows of
    ids the run never sees, and limited to what it holds) raises with those
    rows (``.rows``) and the steps stay in the pipeline (armed at the first
    stale re-run; re-runs for a larger eviction cap come before it). With the filler
    erased, the limit raised and the rows put back, flush re-runs them by
    the verdict the failed step had (a second check would read capacities
    its first check raised, and count a stale re-run twice) and the run ends
    bit for bit as the unlimited one, each step once, in order."""
    ref, ref_state, ref_losses = unlimited
    coll, step, state = _limited_start()
    pipe = TrainPipeline(step, depth=3)
    rerun, filler = pipe._rerun, {}

    def rerun_refusing(state, verdict):
        if not filler and verdict.stale and len(coll.host_tier.stores["a"]):
            filler.update(fill_stores(coll.host_tier, ["a"]))
            coll.host_tier.memory_limit_bytes = None  # no room made: the settle refuses
        return rerun(state, verdict)

    pipe._rerun = rerun_refusing
    def recover(e, todo):
        assert sorted(e.rows) == ["a"] and e.applied is False and not hasattr(e, "batches")
        unfill_stores(coll.host_tier, filler)
        coll.host_tier.put_back(e.rows)
        return pipe.flush(e.state), todo

    state, errors = _run_recovering(pipe, state, batches[:6], recover)
    done = pipe.pop_completed()
    assert len(errors) == 1 and filler
    plain_coll, plain_step, plain_state = _limited_start()
    plain = TrainPipeline(plain_step, depth=3)
    for b in batches[:6]:
        plain_state = plain.submit(plain_state, b)
    plain.flush(plain_state)
    assert pipe.stale_reruns == plain.stale_reruns > 0  # the refused re-run counted once
    assert [m["step"] for m in done] == list(range(1, 7))
    assert [m["loss"] for m in done] == ref_losses
    assert_as_unlimited(coll, state, ref, ref_state)
