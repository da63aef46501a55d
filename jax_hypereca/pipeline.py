"""The pipelined train loop: host work and the host's checks run while the
device trains.

Stages, per batch t (after TorchRec's TrainPipelineSparseDist, which names
which stage overlaps which):

  A  host thread (``prefetch``): the next batches are read, parsed, checked
     and placed on the mesh (``EmbeddingCollection.prepare_batch``: padding,
     int64 ids split over the devices), ``prefetch`` batches ahead through a
     bounded queue. A(t+1..t+prefetch) overlaps B/C(t) on the device and the
     host's check of t-depth+1.
  B  device: B1, dedup, owner bucketing and id exchange of batch t (no table
     is read: lookup.route_local); B2, ``find_or_insert`` of its ids at their
     owners. C  device: gather, row exchange, the model's forward and
     backward, gradient exchange and the fused apply of batch t. At depth
     >= 2 with ``route_ahead`` (the default but on CPU) one compiled program
     runs B2(t), C(t) and B1(t+1) (the pipeline holds one batch back to
     have t+1 at hand), so t+1's id exchange can overlap t's dense work
     (else B1(t) runs in t's program); B2(t+1) runs in the next program,
     after C(t) has applied, so rows are never read stale and no row batch
     t still needs can be evicted by t+1's inserts (I5 holds by order). The
     first batch, one after a flush or a re-run and one whose route was
     made for capacities a check has since raised are routed by a small
     program of their own; at a flush the held batch's program routes its
     own ids again (unused), so every step runs the same program.
  check  host: the step's statistics (a few integers per table) are read
     ``depth - 1`` steps after it was dispatched, so the device never waits
     for the host between steps.

A step that must not be applied (an exchange buffer too small, a table past
its growth threshold, an id its bucket had to refuse) changes nothing and
leaves the state's step count behind; every step queued after it expects a
later count and is a no-op too. The host then repairs (raises buffers, grows
the table) and re-runs from the failed batch, so the result is the one the
synchronous loop (depth 1) gives, bit for bit.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Callable, Iterable, Iterator

from jax_hypereca.errors import HyperecaError
from jax_hypereca.host_tier import HostTierFullError
from jax_hypereca.state import TrainState
from jax_hypereca.steps import MAX_RERUNS, Pending, ShardedTrainStep, host_value

log = logging.getLogger("jax_hypereca")

# Seconds a closed prefetch waits for its thread to finish the item it is on.
JOIN_TIMEOUT_S = 10.0
# Stale re-runs (steps in flight that met ids a step before them had just
# demoted to the host tier) after which the pipeline runs at depth 1.
STALE_RERUNS_BEFORE_DEPTH_1 = 3
# route_ahead's default on CPU meshes: XLA:CPU runs a program's ops on one
# thread pool, so t+1's routing has no idle unit to overlap; there it cost
# 0-5% (bench_pipeline --quick, route_ahead_speedup 0.95-1.00 over four
# runs on 2 cores). On GPUs the id exchange can overlap the dense step.
ROUTE_AHEAD_ON_CPU = False


class TrainPipeline:
    """Runs a ShardedTrainStep up to `depth` steps ahead of the host's checks.

    ``submit(state, batch)`` dispatches a step and returns the newest state
    (still being computed); the metrics of steps whose checks passed collect
    in ``completed`` (in step order, each with its ``step`` number) for the
    caller to pop. With ``route_ahead`` (depth >= 2) the last batch
    submitted is held until the next one comes (its ids are routed beside
    the step before it; see above). ``flush(state)`` dispatches it, waits
    for and checks every step in flight and returns the state after the
    last one: call it before reading the state (evaluation, checkpoints,
    table statistics) or changing it (re-plan, restore). depth=1 is the
    synchronous loop; ``route_ahead=False`` keeps B1(t+1) in t+1's own
    program (no batch is held); None (the default) is True except on CPU
    meshes (ROUTE_AHEAD_ON_CPU). While ``exchange="auto"`` is still timing
    its candidates the pipeline runs at depth 1 (the timings need whole
    steps).

    Errors the statistics raise (reserved ids, a full table at its memory
    cap, non-finite gradients) surface at the check, with the newest state
    as ``.state``: the steps dispatched after the faulty one were applied.

    A host tier too full for a step's demotions refuses it before it runs
    (HostTierFullError, ``.applied`` False). An error raised while a step is
    dispatched -- that one, or any other -- holds every batch submitted and
    not run, in order (``.batches``, prepared; the refused step's first, its
    step number ``.step``): when the step was one re-dispatched after a
    failed step, the batches submitted after it are there too, so no batch
    is dropped. ``.state`` is the state after the steps that were dispatched
    (those stay in the pipeline). A HostTierFullError whose ``.rows`` is
    non-empty holds rows a full store refused. To go on: raise the limit,
    ``HostTier.put_back(error.rows)`` if any, ``flush(error.state)``, then
    submit ``error.batches`` if any.
    """

    def __init__(self, step: ShardedTrainStep, *, depth: int = 2, local: bool = False,
                 route_ahead: bool | None = None):
        if depth < 1:
            raise ValueError(f"pipeline depth must be >= 1, got {depth}")
        self.step = step
        self.depth = depth
        self.local = local
        if route_ahead is None:  # see ROUTE_AHEAD_ON_CPU
            route_ahead = ROUTE_AHEAD_ON_CPU or step.c.mesh.devices.flat[0].platform != "cpu"
        self.route_ahead = route_ahead  # False: each step routes its own batch's ids
        self.completed: list[dict] = []
        self._pending: collections.deque[Pending] = collections.deque()
        self._index: int | None = None
        self.stale_reruns = 0  # steps re-run because an earlier one in flight evicted their ids
        self._held = None  # the verdict of a failed step whose re-run a full host tier stopped
        self._next = None  # a prepared batch held back until the one after it is submitted
        self._ahead = None  # its route, from the step dispatched before it (Pending.ahead)

    @property
    def in_flight(self) -> int:
        """Steps dispatched but not yet checked."""
        return len(self._pending)

    @property
    def running_depth(self) -> int:
        """The depth steps run at now (`depth`, or 1 while exchange="auto"
        times its candidates and after repeated stale re-runs)."""
        return self._depth()

    def _depth(self) -> int:
        trial = self.step.c.exchange_trial
        if self.stale_reruns >= STALE_RERUNS_BEFORE_DEPTH_1:
            return 1  # the host tier's churn outruns steps in flight (see _rerun)
        return 1 if trial is not None and trial.chosen is None else self.depth

    def submit(self, state: TrainState, batch) -> TrainState:
        """Dispatches a step on the batch held from the last call (depth >=
        2), routing `batch` (a host batch or one prepare_batch made) in its
        program, and holds `batch`; at depth 1 dispatches `batch`. Checks the
        oldest steps until fewer than `depth` are in flight."""
        batch = self.step.c.prepare_batch(batch, local=self.local)
        if self._index is None:
            self._index = int(host_value(state.step))
        todo = [b for b in (self._next, batch) if b is not None]
        self._next = None
        state = self._dispatch_all(state, todo, hold_last=True)
        while len(self._pending) >= self._depth():
            state = self._check_oldest(state)
        return state

    def flush(self, state: TrainState) -> TrainState:
        """Dispatches the held batch, checks every step in flight; returns
        the state after the last. The next submit reads the step count from
        the state it is given (the caller may change the state in between:
        re-plan, restore)."""
        if self._next is not None:
            todo, self._next = [self._next], None
            state = self._dispatch(state, todo)
        while self._pending:
            state = self._check_oldest(state)
        self._index, self._ahead = None, None
        return state

    @property
    def _split(self) -> bool:
        """Whether steps route the next batch's ids (depth >= 2; at a running
        depth of 1 too, so that one program serves every step)."""
        return self.route_ahead and self.depth > 1

    def _dispatch_all(self, state: TrainState, todo: list, *, hold_last: bool) -> TrainState:
        """Dispatches the batches of `todo` in order, each routing the next
        one's ids (`_split`); then, if `hold_last`, the last is held for the
        next submit."""
        hold = hold_last and self._split
        for i in range(len(todo) - hold):
            state = self._dispatch(state, todo[i:])
        if hold:
            self._next = todo[-1]
        return state

    def _dispatch(self, state: TrainState, todo: list) -> TrainState:
        """Dispatches todo[0] (with its route, if the step before made one)
        and, if `_split`, routes todo[1] in the same program. On an error
        every batch of `todo` is handed back, not run; the steps before are
        in flight."""
        routed, self._ahead = self._ahead, None
        try:
            state, pending = self.step.dispatch(
                state, todo[0], self._index, unsettled=self._pending, split=self._split,
                routed=routed, next_batch=todo[1] if len(todo) > 1 else None)
        except Exception as e:
            _hand_back(e, todo, self._index + 1)
            raise
        self._pending.append(pending)
        self._index += 1
        self._ahead = pending.ahead
        return state

    def pop_completed(self) -> list[dict]:
        """The metrics of the steps checked since the last call."""
        done, self.completed = self.completed, []
        return done

    def _check_oldest(self, state: TrainState) -> TrainState:
        for _ in range(MAX_RERUNS):
            # a full host tier raises holding `state`: after put_back, flush(error.state)
            # checks the steps still in flight (a failed one by the verdict it had:
            # checking it again would read capacities its first check raised)
            verdict = self._held or self.step.check_holding(state, self._pending[0])
            self._held = None
            if verdict.ok:
                p = self._pending.popleft()
                self.completed.append(self.step.finish(state, p, verdict))
                return state
            state = self._rerun(state, verdict)
        raise HyperecaError(f"train step {self._pending[0].index + 1} kept needing larger "
                            f"exchange buffers or tables after {MAX_RERUNS} re-runs")

    def _rerun(self, state: TrainState, verdict) -> TrainState:
        """The oldest step failed and every later one in flight was a no-op:
        repair, then dispatch them all again in order. A step cancelled as
        stale (it needed a row an unsettled step had just moved to the host
        tier, tiers.py) is counted; past STALE_RERUNS_BEFORE_DEPTH_1 the
        pipeline runs at depth 1, where that cannot happen: when the device
        budget is so tight that a step's evictions are the next step's ids,
        every re-run costs a whole step and steps in flight do not pay."""
        batches = [p.batch for p in self._pending]
        index = self._pending[0].index
        for p in self._pending:  # no-ops, but a host tier must get their staged rows back
            try:
                self.step.settle(p)
            except HostTierFullError as e:  # rows held by e; the steps stay to re-run
                e.state, e.applied, self._held = state, False, verdict
                raise
        self._pending.clear()
        if verdict.stale:
            self.stale_reruns += 1
            if self.stale_reruns == STALE_RERUNS_BEFORE_DEPTH_1:
                log.warning("%d train steps met ids the step before them had just moved to "
                            "the host tier (%s) and were re-run; the pipeline goes on at "
                            "depth 1 (asked: %d). A larger device budget avoids this.",
                            self.stale_reruns, sorted(verdict.stale), self.depth)
        state = self.step.repair(state, verdict)
        # re-routed (capacities may have changed), the held batch too
        held = self._next is not None
        todo = batches + ([self._next] if held else [])
        self._index, self._next, self._ahead = index, None, None
        return self._dispatch_all(state, todo, hold_last=held)


def _hand_back(error: Exception, batches: list, step: int) -> None:
    """Attaches to an error raised while dispatching the batches not run
    (``.batches``, in order) and the first one's step number (``.step``)."""
    try:
        error.batches, error.step = batches, step
    except AttributeError:  # an exception type without a __dict__: nothing to attach
        log.error("train steps %d..%d were not run (%s cannot carry their batches)",
                  step, step + len(batches) - 1, type(error).__name__)


def prefetch(batches: Iterable, depth: int = 2, fn: Callable | None = None,
             *, name: str = "hypereca-prefetch") -> Iterator:
    """Stage A: ``fn(b)`` (or b) for each b of `batches`, computed by a
    background thread up to `depth` items ahead. An exception in the thread
    is raised here, with its traceback, at the item it replaced; closing the
    iterator stops the thread (joined within JOIN_TIMEOUT_S)."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    q: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for b in batches:
                if stop.is_set() or not put(fn(b) if fn is not None else b):
                    return
            put(end)
        except BaseException as e:  # handed to the consumer
            put(e)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(JOIN_TIMEOUT_S)
