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
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_hypereca.errors import (
    HyperecaError, raise_for_apply_status, raise_for_insert_status)
from jax_hypereca.layout import Layout
from jax_hypereca.lookup_scope import scoped
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

        def ev(state, batch):
            _, outputs, _, stats, ok = fwd(state.tables, state.hot, batch["ids"],
                                           batch["weights"], state.step)
            return predict(state.params, outputs, batch), stats, ok
        return jax.jit(ev)

    def __call__(self, state: TrainState, batch, *, local: bool = False):
        batch = self.c.prepare_batch(batch, local=local)
        size = _batch_size(batch)
        caps = self.c.eval_capacities(size)
        for _ in range(MAX_RERUNS):
            layout = self.c.layout(size, tuple(state.hot), capacities=caps)
            if layout not in self._compiled:
                self._compiled[layout] = self._build(layout)
            out, stats, ok = self._compiled[layout](state, batch)
            stats = self.c.host_stats(stats)
            if bool(_first(ok)):
                raise_for_stats(self.c, stats, state.tables, where="evaluation")
                return out
            if not caps.observe(self.c.needs(stats), size, 0):
                raise HyperecaError("an eval call reported an exchange overflow that its "
                                    "counts do not show (a bug: please report it)")
            self.reruns += 1
        raise HyperecaError(f"an eval call on {size} samples kept needing larger exchange "
                            f"buffers after {MAX_RERUNS} re-runs")


class ShardedTrainStep:
    """The compiled train step of an EmbeddingCollection (one per layout).

    The state is donated: tables are updated in place. After each call the
    step's statistics come back to the host (a few integers per table): an
    exchange capacity that was too small is raised and the step re-run
    (nothing was applied), reserved ids, refused inserts and non-finite
    gradients raise with the numbers, the exception carrying the step's
    outputs as ``.state``."""

    def __init__(self, collection, loss_fn: LossFn,
                 dense_tx: optax.GradientTransformation, *, has_aux: bool = False):
        self.c = collection
        self.loss_fn = loss_fn
        self.dense_tx = dense_tx
        self.has_aux = has_aux
        self._compiled: dict[Layout, Callable] = {}
        self.retries = 0

    def _build(self, layout: Layout):
        fwd = self.c.forward_fn(layout, train=True)
        bwd = self.c.backward_fn(layout)
        loss_fn, tx, has_aux = self.loss_fn, self.dense_tx, self.has_aux

        def step_fn(state: TrainState, batch):
            tables, outputs, contexts, stats, ok = fwd(state.tables, state.hot, batch["ids"],
                                                       batch["weights"], state.step + 1)
            out, (g_params, g_out) = jax.value_and_grad(scoped(loss_fn), argnums=(0, 1),
                                                        has_aux=has_aux)(state.params, outputs,
                                                                         batch)
            loss, aux = out if has_aux else (out, None)
            tables, hot, problems = bwd(tables, state.hot, g_out, contexts, batch["weights"],
                                        state.step, ok)
            updates, opt_state = tx.update(g_params, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
            new_state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state),
                                   tables, jnp.where(ok, state.step + 1, state.step), hot)
            return new_state, {"loss": loss, "aux": aux, "stats": stats,
                               "apply_problems": problems, "ok": ok}

        return jax.jit(step_fn, donate_argnums=(0,))

    def compiled(self, state: TrainState, batch) -> Callable:
        size = _batch_size(batch)
        layout = self.c.layout(size, tuple(state.hot))
        if layout not in self._compiled:
            self._compiled[layout] = self._build(layout)
        return self._compiled[layout]

    def lower(self, state: TrainState, batch):
        """The lowered step for a prepared batch (to inspect its HLO)."""
        return self.compiled(state, batch).lower(state, batch)

    def __call__(self, state: TrainState, batch, *, local: bool = False):
        batch = self.c.prepare_batch(batch, local=local)
        size = _batch_size(batch)
        t0, compiled, retries = time.perf_counter(), len(self._compiled), self.retries
        for _ in range(MAX_RERUNS):
            state, metrics = self.compiled(state, batch)(state, batch)
            stats = self.c.host_stats(metrics["stats"], metrics["apply_problems"])
            overflow = self.c.train_capacities.observe(self.c.needs(stats), size,
                                                       int(_first(state.step)))
            refused = set() if overflow else {t for t, st in stats.items()
                                              if st["failed"].sum() and not st["reserved"].sum()}
            state = self.c._maybe_grow(state, stats, refused)
            if not overflow and not refused:
                break
            self.retries += 1
        else:
            raise HyperecaError(f"the step kept needing larger exchange buffers or tables after "
                                f"{MAX_RERUNS} re-runs")
        layout = self.c.layout(size, tuple(state.hot))
        metrics = dict(metrics, loss=float(_first(metrics["loss"])), stats=stats,
                       bytes_per_step=layout.bytes_per_step(), exchange=layout.exchange.name)
        self._time_exchange(layout.exchange.name, time.perf_counter() - t0,
                            compiled == len(self._compiled) and retries == self.retries)
        try:
            raise_for_stats(self.c, stats, state.tables, where="train step")
        except HyperecaError as e:
            e.state, e.metrics = state, metrics
            raise
        return state, metrics


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


def _batch_size(batch) -> int:
    return next(iter(batch["ids"].values())).shape[0]


def _first(x) -> np.ndarray:
    """A replicated array's value on this process."""
    return np.asarray(x.addressable_shards[0].data)
