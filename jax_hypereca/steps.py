"""The compiled steps of an EmbeddingCollection: the train step and the
evaluation function, each a jit of the collection's shard_map'ped lookup (see
lookup.py) around the user's function, with the host-side loop that keeps
every call exact: an exchange buffer too small re-runs the call with larger
ones, a bucket that must refuse a row grows the table and re-runs the step,
and every status the device code reports is raised with its numbers
(`raise_for_stats`, the one place that turns statistics into errors)."""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_hypereca.errors import (
    HyperecaError, raise_for_apply_status, raise_for_insert_status)
from jax_hypereca.host_tier import HostTierFullError
from jax_hypereca.layout import Layout
from jax_hypereca.lookup_scope import scoped
from jax_hypereca.placement import fullest_shard
from jax_hypereca.state import LossFn, TrainState

log = logging.getLogger("jax_hypereca")

# A call re-run more often than this (each time with larger exchange buffers
# or tables) raises instead.
MAX_RERUNS = 16


def raise_for_stats(collection, stats: Mapping[str, Mapping[str, np.ndarray]], tables, *,
                    where: str) -> None:
    """Raises for what a call's per-device statistics report (summed over
    devices): reserved ids (ReservedIdError), inserts refused a row
    (TableFullError), and, for a train step, gradient rows skipped as
    non-finite or slots outside a table."""
    for t, st in stats.items():
        total = {k: int(v.sum()) for k, v in st.items()}
        total["queries"] = max(total["queries"], total["ids"])
        if total["reserved"] or total["failed"]:
            rows = tables[t].keys.shape[0]
            raise_for_insert_status(
                t, total, capacity=rows, bucket_size=collection.tables[t].bucket_size,
                max_evictions=rows // collection.num_shards, where=where)
        if "apply_bad_slots" in total:  # a train step's statistics
            # Summed over the owners: their own unique rows are not counted.
            raise_for_apply_status(t, {"nonfinite": total["apply_nonfinite"],
                                       "bad_slots": total["apply_bad_slots"]})


class EvalFn:
    """The compiled evaluation of an EmbeddingCollection (one per layout).

    Every call checks on the host that its exchange had room for all of its
    ids and otherwise re-runs with larger buffers (eval capacities are kept
    per batch size, apart from the train step's), so a row is never dropped
    and any batch size gives each sample the same embeddings. Reserved ids in
    device inputs raise ReservedIdError. ``reruns`` counts the re-runs."""

    def __init__(self, collection, predict_fn: Callable):
        self.c = collection
        self.predict_fn = predict_fn
        self._compiled: dict[Layout, Callable] = {}
        self.reruns = 0

    def _build(self, layout: Layout) -> Callable:
        fwd = self.c.forward_fn(layout, train=False)
        predict = scoped(self.predict_fn)

        def ev(state, batch, tier_in):
            _, outputs, _, stats, ok, _ = fwd(state.tables, state.hot, batch["ids"],
                                              batch["weights"], state.step, True, tier_in)
            return predict(state.params, outputs, batch), stats, ok
        return jax.jit(ev)

    def __call__(self, state: TrainState, batch, *, local: bool = False):
        batch = self.c.prepare_batch(batch, local=local)
        size = _batch_size(batch)
        caps = self.c.eval_capacities(size)
        tier_in = _tier_in(self.c.stage(batch, take=False))  # host rows: read, not moved
        batch = self.c.device_batch(batch)
        for _ in range(MAX_RERUNS):
            layout = self.c.layout(size, tuple(state.hot), capacities=caps)
            if layout not in self._compiled:
                self._compiled[layout] = self._build(layout)
            out, stats, ok = self._compiled[layout](state, batch, tier_in)
            stats = self.c.host_stats(stats)
            if bool(host_value(ok)):
                raise_for_stats(self.c, stats, state.tables, where="evaluation")
                return out
            if not caps.observe(self.c.needs(stats), size, 0):
                raise HyperecaError("an eval call reported an exchange overflow that its "
                                    "counts do not show (a bug: please report it)")
            self.reruns += 1
        raise HyperecaError(f"an eval call on {size} samples kept needing larger exchange "
                            f"buffers after {MAX_RERUNS} re-runs")


class Pending(NamedTuple):
    """A dispatched train step whose statistics the host has not read yet."""

    batch: dict        # the prepared batch (kept to re-run the step)
    index: int         # the state's step count the step expects (it runs step index + 1)
    layout: Layout
    metrics: dict      # device arrays
    t0: float          # dispatch time
    clean: bool        # neither compiled (argument shapes seen before) nor re-ran:
                       # a fair time for exchange="auto"
    staged: object     # the host tier's rows it took (tiers.Staged), or None
    settled: list      # [whether the host tier has seen what it moved] (a mutable cell)
    read_back_rows: int  # evicted rows per device the step read back for settle (0: none)
    ahead: object = None  # (Routed, Layout): the next batch's ids routed by this program


class Verdict(NamedTuple):
    """What a step's statistics say (read on the host)."""

    stats: dict        # per table, per device (Collection.host_stats)
    overflow: bool     # an exchange buffer was too small (capacities raised)
    refused: set       # tables that refused a row an id of the step needed
    full: set          # tables past their growth threshold before the step
    ok: bool           # the step was applied
    stale: set = frozenset()  # tables whose ids an unsettled step evicted (host tier)


class ShardedTrainStep:
    """The compiled train step of an EmbeddingCollection (one per layout).

    The state is donated: tables are updated in place. A step is applied only
    if the state's step count is the one the host expects (so a step queued
    behind one that failed is a no-op; see pipeline.py), no table is past its
    growth threshold, every exchange buffer had room and every id got a row;
    otherwise nothing changes and the host repairs (larger buffers, a grown
    table) and re-runs it. Calling the step runs one step synchronously: its
    statistics come back to the host (a few integers per table) and reserved
    ids, refused inserts and non-finite gradients raise with the numbers, the
    exception carrying the step's outputs as ``.state``. ``TrainPipeline``
    runs the same pieces (dispatch, check, repair, finish) several steps
    ahead of the host."""

    def __init__(self, collection, loss_fn: LossFn,
                 dense_tx: optax.GradientTransformation, *, has_aux: bool = False):
        self.c = collection
        self.loss_fn = loss_fn
        self.dense_tx = dense_tx
        self.has_aux = has_aux
        self._compiled: dict[Layout, Callable] = {}
        self._routes: dict[Layout, Callable] = {}  # route programs (pipeline.py)
        self._signatures: set = set()  # the argument shapes each program has run with
        self.retries = 0
        self.routed_ahead = 0  # steps whose ids the step before routed (pipeline.py)
        # With a host tier on CPU a table's eviction outputs hold the host
        # tier's read-back rows per device (demoted_rows, raised when a step
        # needs more: _evictions_overflowed), not one row per id: the step
        # writes, reads back and -- for the steps in flight after it -- sorts
        # 3,968-row buffers per table and device where ~50 rows are real
        # (lookup._stale took 32 ms of a 26-table, 8-device step, 7 ms
        # capped). A cap below one row per id runs find_or_insert as one task
        # (on CPU it is one task anyway below 16,384 ids per device); on a
        # GPU that is its sequential kernel, so there the outputs stay
        # uncapped.
        self.cap_evictions = (collection.host_tier is not None
                              and collection.mesh.devices.flat[0].platform == "cpu")

    @property
    def programs(self) -> int:
        """Step programs compiled so far (one per exchange layout: capacities
        raised after an overflow or re-fitted, a table grown, a new hot fold)."""
        return len(self._compiled)

    def _build(self, layout: Layout):
        fwd = self.c.forward_fn(layout, train=True)
        bwd = self.c.backward_fn(layout)
        route = self.c.route_fn(layout)
        loss_fn, tx, has_aux = self.loss_fn, self.dense_tx, self.has_aux
        names = tuple(self.c.tables)

        def step_fn(state: TrainState, batch, host, tier_in, read_back_rows=0, routed=None,
                    next_ids=None):
            # host = [the step count the host expects, each table's growth limit];
            # routed: this batch's ids at their owners (routed by the step before);
            # next_ids: the next batch's, routed here (B(t+1) beside C(t)): no table
            # is read, so neither its order against this step's update nor I5 matters
            full = jnp.stack([fullest_shard(state.tables[t]) > host[i + 1]
                              for i, t in enumerate(names)])
            live = (state.step == host[0]) & ~full.any()
            if state.admission:
                tier_in = dict(tier_in, admission=state.admission)
            tables, outputs, contexts, stats, ok, tier = fwd(
                state.tables, state.hot, batch["ids"], batch["weights"], state.step + 1, live,
                tier_in, max_evictions=read_back_rows if self.cap_evictions else 0,
                routed=routed)
            ahead = None if next_ids is None else route(state.hot, next_ids)
            counted = tier.pop("admission", {})  # kept only if the step is applied
            with jax.named_scope("stage_dense"):
                out, (g_params, g_out) = jax.value_and_grad(
                    scoped(loss_fn), argnums=(0, 1), has_aux=has_aux)(state.params, outputs,
                                                                      batch)
            loss, aux = out if has_aux else (out, None)
            tables, hot, problems = bwd(tables, state.hot, g_out, contexts, batch["weights"],
                                        state.step, ok)
            with jax.named_scope("stage_dense"):
                updates, opt_state = tx.update(g_params, state.opt_state, state.params)
                params = optax.apply_updates(state.params, updates)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
            admission = {t: keep(counted.get(t, a), a) for t, a in state.admission.items()}
            new_state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state),
                                   tables, jnp.where(ok, state.step + 1, state.step), hot,
                                   admission)
            if read_back_rows:  # settle's arrays, ready when this step is
                tier["read_back"] = self.c.host_tier.read_back(
                    tier["written"], tier["demoted"], read_back_rows)
            return new_state, {"loss": loss, "aux": aux, "stats": stats,
                               "apply_problems": problems, "ok": ok, "live": live,
                               "full": full, "tier": tier}, ahead

        return jax.jit(step_fn, donate_argnums=(0,), static_argnames=("read_back_rows",))

    def compiled(self, state: TrainState, batch) -> Callable:
        size = _batch_size(batch)
        layout = self.c.layout(size, tuple(state.hot))
        if layout not in self._compiled:
            self._compiled[layout] = self._build(layout)
        return self._compiled[layout]

    def _args(self, state: TrainState, index: int) -> tuple:
        """The host's argument of a step, one int64 vector: the step count it
        expects and each table's growth limit (Collection.grow_limits)."""
        limits = self.c.grow_limits(state.tables)
        host = np.array([index] + [limits[t] for t in self.c.tables], np.int64)
        return (jnp.asarray(host, jnp.int64),)

    def lower(self, state: TrainState, batch, next_batch=None):
        """The lowered step for a prepared batch (to inspect its HLO); with
        `next_batch`, the pipeline's form: the batch's ids come routed, the
        program routes `next_batch`'s."""
        routed, next_ids, _, _ = self._split_args(state, batch, None, next_batch,
                                                  split=next_batch is not None)
        return self.compiled(state, batch).lower(state, self.c.device_batch(batch),
                                                 *self._args(state, 0),
                                                 _tier_in(self.c.stage(batch, take=False)),
                                                 routed=routed, next_ids=next_ids)

    def route(self, state: TrainState, batch):
        """A prepared batch's ids routed to their owners by a program of
        their own (lookup.route_local; the form a step's ``routed`` takes)."""
        layout = self.c.layout(_batch_size(batch), tuple(state.hot))
        if layout not in self._routes:
            self._routes[layout] = jax.jit(self.c.route_fn(layout))
        return self._routes[layout](state.hot, self.c.device_batch(batch)["ids"])

    def _split_args(self, state: TrainState, batch, routed, next_batch, *, split: bool):
        """A step's (routed, next_ids) arguments -- none unless `split`: the
        batch's route (`routed`, the step before's ``ahead``, if it was made
        for this layout, else routed now) and the ids to route in the
        program: `next_batch`'s if it is the same size, else the batch's own
        again (the result unused), so every split step is one program -- and
        whether the route was carried and the ids are the next batch's."""
        if not split:
            return None, None, False, False
        layout = self.c.layout(_batch_size(batch), tuple(state.hot))
        carried = routed is not None and routed[1] == layout
        routed = routed[0] if carried else self.route(state, batch)
        follows = next_batch is not None and _batch_size(next_batch) == _batch_size(batch)
        ids = self.c.device_batch(next_batch if follows else batch)["ids"]
        return routed, ids, carried, follows

    def dispatch(self, state: TrainState, batch, index: int, *,
                 unsettled: Sequence[Pending] = (), split: bool = False, routed=None,
                 next_batch=None) -> tuple[TrainState, Pending]:
        """Starts the step on a prepared batch (asynchronously); `index` is
        the step count the state will have when the step runs. With a host
        tier, `unsettled` are the steps dispatched before it and not yet
        checked: an id they evicted that this step inserts afresh cancels it
        (``stale``; the host re-runs it once they are settled, tiers.py).
        With `split` (the pipeline at depth >= 2) the batch's ids come
        routed -- `routed`, the ``ahead`` of the step before, or routed now
        -- and `next_batch`, the batch to dispatch next, has its ids routed
        in this step's program (the Pending's ``ahead``), so their exchange
        can overlap this step's dense work."""
        t0, retries = time.perf_counter(), self.retries
        fn = self.compiled(state, batch)
        layout = self.c.layout(_batch_size(batch), tuple(state.hot))
        routed, next_ids, carried, follows = self._split_args(state, batch, routed,
                                                              next_batch, split=split)
        try:
            staged = self.c.stage(batch, take=True)  # held until check settles them
        except HostTierFullError as e:  # no room for its demotions: not run, nothing moved
            e.state, e.applied = state, False
            raise
        rows = 0 if staged is None else self.c.host_tier.demoted_rows
        tier_in = _tier_in(staged, unsettled)
        # a new layout, a table grown, more rows read back, staged or in flight:
        # jit compiles
        signature = (layout, rows, tuple(np.shape(x) for x in jax.tree.leaves(tier_in)),
                     tuple(t.keys.shape for t in (*state.tables.values(), *state.hot.values())),
                     split)
        fresh = signature not in self._signatures
        self._signatures.add(signature)
        try:
            state, metrics, ahead = fn(state, self.c.device_batch(batch),
                                       *self._args(state, index), tier_in, read_back_rows=rows,
                                       routed=routed, next_ids=next_ids)
        except Exception as original:  # not run (a compile or argument error): rows go back
            if staged is not None:
                try:
                    self.c.host_tier.unstage(staged)
                except HostTierFullError as e:  # rows a full store refused: held by e
                    e.state, e.applied = state, False
                    raise e from original
            raise
        self.routed_ahead += carried
        return state, Pending(batch, index, layout, metrics, t0,
                              not fresh and retries == self.retries, staged, [False], rows,
                              (ahead, layout) if follows else None)

    def check(self, p: Pending) -> Verdict:
        """Reads a step's statistics (waits for it) and raises the exchange
        capacities it outgrew."""
        stats = self.c.host_stats(p.metrics["stats"], p.metrics["apply_problems"])
        evictions = self._evictions_overflowed(p, stats)  # raised even if settle raises
        self.settle(p, stats)
        overflow = self.c.train_capacities.observe(self.c.needs(stats), _batch_size(p.batch),
                                                   p.index) or evictions
        full = {t for t, f in zip(self.c.tables, host_value(p.metrics["full"])) if f}
        refused = set() if overflow or full else {
            t for t, st in stats.items() if st["failed"].sum() and not st["reserved"].sum()}
        stale = set() if overflow or full else {
            t for t, st in stats.items() if st["stale"].sum()}
        ok = bool(host_value(p.metrics["ok"]))
        if not ok and not (overflow or full or refused or stale):
            live = bool(host_value(p.metrics["live"]))
            raise HyperecaError(f"train step {p.index + 1} was not applied (expected step count "
                                f"matched: {live}) and reports no reason; a bug: please report "
                                f"it")
        return Verdict(stats, overflow, refused, full, ok, stale)

    def _evictions_overflowed(self, p: Pending, stats: dict) -> bool:
        """Whether a table of the step had to refuse inserts on a device
        because it had evicted as many rows as its eviction outputs hold
        (``cap_evictions``); the host tier's read-back rows are then raised to
        what that device needed (a power of two) and the step must re-run."""
        cap = p.read_back_rows if self.cap_evictions else 0
        need = max([int((st["evicted"] + st["failed"])[(st["failed"] > 0)
                                                       & (st["evicted"] >= cap)].max(initial=0))
                    for st in stats.values()] + [0]) if cap else 0
        if not need:
            return False
        self.c.host_tier.read_back_at_least(need)
        log.info("train step %d needed to evict up to %d rows of a table on one device, its "
                 "eviction outputs hold %d: re-running it with %d", p.index + 1, need, cap,
                 self.c.host_tier.demoted_rows)
        return True

    def check_holding(self, state: TrainState, p: Pending) -> Verdict:
        """`check`; a host tier too full for the rows the step moved raises
        HostTierFullError holding them (``.rows``) and the state after the
        step (``.state``; ``.applied``: whether the step was applied, else
        its batch is still to train): raise the limit, ``put_back`` the rows
        and go on from that state. Nothing is lost."""
        try:
            return self.check(p)
        except HostTierFullError as e:
            e.state, e.applied = state, bool(host_value(p.metrics["ok"]))
            raise

    def settle(self, p: Pending, stats: dict | None = None) -> None:
        """Gives the host tier what an attempt of a step moved (its staged
        rows not written go back, the rows it evicted go in; tiers.py).
        Every attempt is settled once, applied or not; `check` does it, and a
        re-run does it for the steps in flight it drops."""
        if self.c.host_tier is None or p.settled[0]:
            return
        p.settled[0] = True
        if stats is None:
            stats = self.c.host_stats(p.metrics["stats"], p.metrics["apply_problems"])
        tier = p.metrics["tier"]
        self.c.host_tier.settle(p.staged, tier["written"], tier["demoted"],
                                {t: st["evicted"] for t, st in stats.items()},
                                {t: int(st["stale"].sum()) for t, st in stats.items()},
                                step=p.index + 1,
                                early=(p.read_back_rows, tier["read_back"])
                                if "read_back" in tier else None)

    def repair(self, state: TrainState, v: Verdict) -> TrainState:
        """Grows the tables a failed step needs (its buffers were raised by
        `check`); the step can then be re-run."""
        self.retries += 1
        return self.c.grow_for(state, full=v.full, refused=v.refused,
                               asked={t: int(st["queries"].max()) for t, st in v.stats.items()})

    def finish(self, state: TrainState, p: Pending, v: Verdict) -> dict:
        """The applied step's metrics; raises what its statistics report (the
        exception carries `state` and the metrics)."""
        metrics = dict(p.metrics, loss=float(host_value(p.metrics["loss"])), stats=v.stats,
                       step=p.index + 1, bytes_per_step=p.layout.bytes_per_step(),
                       exchange=p.layout.exchange.name)
        if self.c.host_tier is not None:
            metrics["host_tier"] = self.c.host_tier.stats()
        self._time_exchange(p.layout.exchange.name, time.perf_counter() - p.t0, p.clean)
        try:
            raise_for_stats(self.c, v.stats, state.tables, where="train step")
        except HyperecaError as e:
            e.state, e.metrics = state, metrics
            raise
        return metrics

    def __call__(self, state: TrainState, batch, *, local: bool = False):
        batch = self.c.prepare_batch(batch, local=local)
        index = int(host_value(state.step))
        for _ in range(MAX_RERUNS):
            state, pending = self.dispatch(state, batch, index)
            verdict = self.check_holding(state, pending)
            if verdict.ok:
                return state, self.finish(state, pending, verdict)
            state = self.repair(state, verdict)
        raise HyperecaError(f"the step kept needing larger exchange buffers or tables after "
                            f"{MAX_RERUNS} re-runs")

    def _time_exchange(self, name: str, seconds: float, clean: bool) -> None:
        """Gives exchange="auto"'s trial the wall time of a step that neither
        compiled nor re-ran."""
        trial = self.c.exchange_trial
        if trial is None or trial.chosen is not None or not clean:
            return
        trial.record(name, seconds)
        if trial.chosen is not None:
            log.info("exchange 'auto' keeps %r on %d devices (median step seconds: %s)",
                     trial.chosen.name, self.c.num_shards, trial.timings)


def _tier_in(staged, unsettled: Sequence[Pending] = ()) -> dict:
    """The host tier's inputs of a compiled call (lookup.forward_local):
    the staged rows on the mesh and, per table, the keys the `unsettled`
    steps evicted; empty without a host tier."""
    if staged is None:
        return {}
    victims = {t: tuple(p.metrics["tier"]["demoted"][t].keys for p in unsettled)
               for t in staged.tables}
    return {"staged": staged.device, "victims": victims}


def _batch_size(batch) -> int:
    return next(iter(batch["ids"].values())).shape[0]


def host_value(x) -> np.ndarray:
    """A replicated array's value on this process."""
    return np.asarray(x.addressable_shards[0].data)
