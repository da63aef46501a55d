"""EmbeddingCollection: many tables and features sharded over a device mesh,
trained with one call per step.

    collection = EmbeddingCollection(tables, features, mesh=make_mesh())
    step = collection.make_train_step(loss_fn, optax.adam(1e-3))
    state = collection.init_train_state(params, optax.adam(1e-3))
    state, metrics = step(state, batch)

``batch`` is a dict with ``batch["ids"][feature]`` ([B, max_ids] int64, padded
with PADDING_ID; or ``[B]`` when max_ids is 1), ``batch["weights"][feature]``
for weighted features, and anything else the loss needs. ``loss_fn(params,
embeddings, batch)`` gets one array per feature ([B, dim], or [B, L, dim] for
pooling "none") and returns the mean loss over the global batch (or
``(loss, aux)``). The dense part runs under ``jit`` on global arrays
(data-parallel); the tables are updated in place, each id on its owner.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jax_hypereca.admission import admits, filtered_totals, init_sketches
from jax_hypereca.capacity import ExchangeCapacities, Group
from jax_hypereca.errors import HyperecaError, TableFullError
from jax_hypereca.erasure import erase_ids
from jax_hypereca.exchange import AllToAll, Exchange, ExchangeTrial, get_exchange
from jax_hypereca.hashing import owner_of
from jax_hypereca.ids import distinct_ids
from jax_hypereca.features import (
    FeatureSpec, Jagged, check_weights, jagged_to_padded, padded_ids, validate_features)
from jax_hypereca.layout import STAT_NAMES, Layout, exchange_groups
from jax_hypereca.lookup import Routed, TableContext, backward_local, forward_local, route_local
from jax_hypereca.placement import (
    batch_to_mesh, counter_totals, counters_by_name, grow_sharded_table, host_gather,
    init_sharded_table, make_mesh)
from jax_hypereca.state import LossFn, TrainState
from jax_hypereca.steps import EvalFn, ShardedTrainStep
from jax_hypereca.table import COUNTER_NAMES, Rows, TableSpec, TableState
from jax_hypereca.tiers import HostTier, unpack as unpack_staged

# The prepared batch's host copy of its ids (a host tier stages by them);
# taken out before the batch goes to a compiled step (device_batch).
HOST_IDS = "_hypereca_host_ids"

log = logging.getLogger("jax_hypereca")

NEVER = int(np.iinfo(np.int64).max)  # a growth limit no table reaches


class EmbeddingCollection:
    """Tables and the features that look them up, sharded over one mesh axis.

    Args:
      tables: the TableSpecs; ``capacity`` is global, split evenly over the
        shards (rounded up to whole buckets per shard, logged).
      features: the FeatureSpecs; several may share a table. Tables of one
        dim and dtype share one exchange.
      mesh: a mesh with the axis ``axis`` (default: all devices, one axis).
      axis: the mesh axis the tables are sharded over and the batch is split on.
      capacity_slack: first per-destination capacity = slack x the even share
        of a device's ids; raised automatically when a batch needs more (the
        call is re-run; nothing is dropped). Train steps and evaluation keep
        separate capacities, evaluation one set per batch size.
      retune_every: train steps between capacity re-fits to the observed
        counts (keeps padding low); 0 disables shrinking.
      capacities: optional first per-destination capacity per table (ids one
        device sends one owner per step), instead of the slack rule; tables
        exchanged together (same dim and dtype) share the sum of theirs.
      grow_threshold: after a step, a table whose fullest shard holds more than
        this share of its rows doubles (at the step boundary), while the
        tables fit ``max_shard_bytes``; past it, rows are evicted by score and
        counted. A step whose ids do not fit a bucket always grows the table
        (and is re-run; nothing was applied).
      max_shard_bytes: memory cap of all tables on one device (None: no cap).
      evict: whether a full bucket evicts its lowest-score row (counted) to
        make room; with False every row stays and the table grows instead
        (raising TableFullError at the memory cap).
      exchange: how ids, rows and gradients move between the devices:
        "all_to_all" (one collective per exchange), "ring" (W-1 shifts of
        the ring, each device receiving from one peer at a time; DESIGN
        section 3.3), "auto" (the two take turns on the first train steps,
        the faster kept and logged; ``exchange_timings`` holds the median
        step seconds), or an ``Exchange`` instance. Results are bit-identical
        for all, so the turns change nothing but the time.
      host_tier: keep the rows the device tier evicts in host memory and
        bring them back when a batch needs them (tiers.py): with
        ``max_shard_bytes`` as the device budget, tables larger than device
        memory train as if every row were on the device. True, or a dict of
        HostTier's settings (``memory_limit_bytes`` per table,
        ``threads``). With several processes each holds the rows its own
        devices evict; hot folds are refused.
    """

    def __init__(self, tables: Sequence[TableSpec], features: Sequence[FeatureSpec], *,
                 mesh: Mesh | None = None, axis: str = "shard", capacity_slack: float = 2.0,
                 retune_every: int = 50, capacities: Mapping[str, int] | None = None,
                 grow_threshold: float = 0.85, max_shard_bytes: int | None = None,
                 evict: bool = True, exchange: str | Exchange = "all_to_all",
                 host_tier: bool | Mapping[str, Any] = False):
        names = [t.name for t in tables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate table names in {names}")
        fnames = [f.name for f in features]
        if len(set(fnames)) != len(fnames):
            raise ValueError(f"duplicate feature names in {fnames}")
        self.tables = {t.name: t for t in tables}
        self.features = {f.name: f for f in features}
        validate_features(self.features, self.tables)
        self.mesh = mesh if mesh is not None else make_mesh(axis_name=axis)
        if axis not in self.mesh.axis_names:
            raise ValueError(f"mesh has no axis {axis!r} (axes: {self.mesh.axis_names})")
        self.axis = axis
        self.num_shards = self.mesh.shape[axis]
        for t in tables:
            rows, bucket = t.shard_geometry(self.num_shards)
            if rows * self.num_shards != t.capacity:
                log.info("table %r: capacity %d -> %d (%d shards x %d rows, buckets of %d)",
                         t.name, t.capacity, rows * self.num_shards, self.num_shards, rows,
                         bucket)
        self.capacity_slack = capacity_slack
        self.retune_every = retune_every
        first = {g: sum(capacities[t] for t in g if t in capacities)
                 for g in self.groups if any(t in (capacities or {}) for t in g)}
        self.train_capacities = ExchangeCapacities(
            self._ids_per_device, self.num_shards, slack=capacity_slack, first=first,
            retune_every=retune_every, what="train step")
        self._eval_capacities: dict[int, ExchangeCapacities] = {}
        self.grow_threshold = grow_threshold
        self.evict = evict
        self.max_shard_bytes = max_shard_bytes
        self._capped: set[str] = set()  # at max_shard_bytes: no more growth
        auto = isinstance(exchange, str) and exchange == "auto"
        self._exchange = AllToAll() if auto else (
            exchange if isinstance(exchange, Exchange) else get_exchange(exchange))
        # One device moves nothing: no trial.
        self.exchange_trial = ExchangeTrial() if auto and self.num_shards > 1 else None
        self.host_tier = None
        if host_tier:
            if not evict:
                raise ValueError("host_tier needs evict=True: the host tier holds the rows the "
                                 "device tier evicts")
            self.host_tier = HostTier(self.tables, self.mesh, axis,
                                      **({} if host_tier is True else dict(host_tier)))

    # ------------------------------------------------------------------ state
    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(self.axis))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def init_tables(self) -> dict[str, TableState]:
        """Empty sharded tables."""
        return {n: init_sharded_table(s, self.mesh, self.axis) for n, s in self.tables.items()}

    def init_train_state(self, params, dense_tx: optax.GradientTransformation) -> TrainState:
        """Replicated dense params and optimizer state, empty tables, step 0."""
        # A copy: the step donates its state, the caller keeps `params`.
        params = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=self.replicated)(
            params)
        opt_state = jax.jit(dense_tx.init, out_shardings=self.replicated)(params)
        # by callback: device_put of a jax array onto a sharding that spans
        # processes, with one device per process, builds a broken array in
        # jax 0.10 (its addressable_shards raise)
        step = jax.make_array_from_callback((), self.replicated,
                                            lambda _: jnp.zeros((), jnp.int64))
        return TrainState(params, opt_state, self.init_tables(), step,
                          admission=init_sketches(self.tables.values(), self.mesh, self.axis))

    # ------------------------------------------------------------------ inputs
    def prepare_batch(self, batch: Mapping[str, Any], *, local: bool = False) -> dict:
        """Checks host inputs before dispatch and places them on the mesh.

        ``batch["ids"][f]`` may be padded ``[B, L]``/``[B]`` arrays or
        ``Jagged`` (values + lengths). With ``local=True`` each process passes
        its own share of the global batch (multi-host); otherwise arrays are
        global. Device arrays pass through unchecked (the ops report bad ids
        through their status outputs instead)."""
        if "ids" not in batch:
            raise ValueError("batch must hold batch['ids'] = {feature: ids}")
        out = dict(batch)
        ids, weights = {}, {}
        given_w = batch.get("weights", {}) or {}
        for name, x in batch["ids"].items():
            if name not in self.features:
                raise ValueError(f"batch has ids for unknown feature {name!r}; features: "
                                 f"{sorted(self.features)}")
            f = self.features[name]
            w = given_w.get(name)
            if isinstance(x, Jagged):
                x, jw = jagged_to_padded(x, f.max_ids, feature=name)
                w = jw if w is None else w
            if isinstance(x, jax.Array):
                ids[name] = x if x.ndim == 2 else x.reshape(x.shape[0], -1)
                if f.weighted:
                    weights[name] = w
                continue
            arr = padded_ids(f, x)
            ids[name] = arr
            if f.weighted:
                weights[name] = check_weights(f, w, arr.shape)
        missing = set(self.features) - set(ids)
        if missing:
            raise ValueError(f"batch lacks ids for features {sorted(missing)}")
        sizes = {v.shape[0] for v in ids.values()}
        if len(sizes) != 1:
            raise ValueError("features have different batch sizes: "
                             f"{ {k: v.shape[0] for k, v in ids.items()} }")
        size = sizes.pop()
        devices_here = self.num_shards // (jax.process_count() if local else 1)
        if size % max(devices_here, 1):
            raise ValueError(f"batch of {size} samples does not split over {devices_here} "
                             f"devices; use a multiple of {devices_here}")
        if self.host_tier is not None:
            out[HOST_IDS] = batch[HOST_IDS] if HOST_IDS in batch else self._table_ids(ids)
        host: list[np.ndarray] = []  # placed in one transfer below

        def later(x, dtype):
            if isinstance(x, jax.Array):
                return x
            host.append(np.asarray(x, dtype))
            return _Placed(len(host) - 1)

        out["ids"] = {k: later(v, np.int64) for k, v in ids.items()}
        out["weights"] = {k: later(v, np.float32) for k, v in weights.items()}
        # Other per-sample arrays (dense features, labels) are split like the ids.
        for key, value in batch.items():
            if key not in ("ids", "weights", HOST_IDS):
                out[key] = jax.tree.map(
                    lambda x: later(x, x.dtype) if isinstance(x, (np.ndarray, jax.Array))
                    and x.ndim >= 1 and x.shape[0] == size else x, value)
        placed = batch_to_mesh(host, self.batch_sharding, local=local)
        return jax.tree.map(lambda x: placed[x.index] if isinstance(x, _Placed) else x, out,
                            is_leaf=lambda x: isinstance(x, _Placed))

    def _table_ids(self, ids: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per table, the unique ids (no padding) of a batch's features."""
        out = {}
        for t in self.tables:
            parts = [ids[f] for f, spec in self.features.items() if spec.table == t]
            if parts:
                out[t] = distinct_ids(*parts)
        return out

    def stage(self, batch: Mapping[str, Any], *, take: bool):
        """The host tier's rows of a prepared batch's ids (tiers.Staged),
        or None without a host tier."""
        if self.host_tier is None:
            return None
        return self.host_tier.stage(batch[HOST_IDS], take=take)

    @staticmethod
    def device_batch(batch: Mapping[str, Any]) -> dict:
        """A prepared batch without its host-side parts (for a compiled step)."""
        return {k: v for k, v in batch.items() if k != HOST_IDS}

    # ---------------------------------------------------------------- layouts
    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """Tables exchanged together (same dim and dtype), in stats order."""
        return exchange_groups(tuple(self.tables.values()), tuple(self.features.values()))

    def layout(self, batch_size: int, hot: Sequence[str] = (), *,
               capacities: ExchangeCapacities | None = None) -> Layout:
        """The exchange layout for a global batch of `batch_size` samples, with
        hot folds for the tables in `hot`, sized by `capacities` (default:
        the train step's)."""
        caps = (capacities or self.train_capacities).current(self.groups, batch_size)
        if hot and self.host_tier is not None:
            raise HyperecaError(f"hot folds {sorted(hot)} with a host tier: a fold would be "
                                f"built from the device tier's rows only. Use one or the other.")
        return Layout(tuple(self.tables.values()), tuple(self.features.values()),
                      self.num_shards, self.axis, caps, self.evict, tuple(sorted(hot)),
                      self.exchange_strategy, self.host_tier is not None)

    @property
    def exchange_strategy(self) -> Exchange:
        """The strategy the next step runs with (with "auto": the turn of the
        trial until it decides, see ExchangeTrial)."""
        if self.exchange_trial is not None:
            return self.exchange_trial.current()
        return self._exchange

    @property
    def exchange(self) -> str:
        """The exchange strategy's name ("auto" until the trial has decided)."""
        trial = self.exchange_trial
        return "auto" if trial is not None and trial.chosen is None else \
            self.exchange_strategy.name

    @property
    def exchange_timings(self) -> dict[str, float]:
        """With "auto": the median step seconds per strategy that decided."""
        return dict(self.exchange_trial.timings) if self.exchange_trial is not None else {}

    def eval_capacities(self, batch_size: int) -> ExchangeCapacities:
        """The exchange capacities of evaluation calls on `batch_size` samples."""
        if batch_size not in self._eval_capacities:
            self._eval_capacities[batch_size] = ExchangeCapacities(
                self._ids_per_device, self.num_shards, slack=self.capacity_slack,
                what="eval call")
        return self._eval_capacities[batch_size]

    def _ids_per_device(self, group: Group, batch_size: int) -> int:
        per_device = batch_size // self.num_shards
        return per_device * sum(f.max_ids for f in self.features.values() if f.table in group)

    def host_stats(self, stats: jax.Array, problems: jax.Array | None = None
                   ) -> dict[str, dict[str, np.ndarray]]:
        """A step's per-device statistics on the host, per table (exact counts):
        the forward's (STAT_NAMES) and, for a train step, the apply's
        (``apply_nonfinite``, ``apply_bad_slots``)."""
        names = [t for g in self.groups for t in g]
        s = host_gather(stats).reshape(self.num_shards, len(names), len(STAT_NAMES))
        p = None if problems is None else host_gather(problems).reshape(
            self.num_shards, len(names), 2)
        out = {}
        for i, t in enumerate(names):
            d = {k: s[:, i, j] for j, k in enumerate(STAT_NAMES)}
            if p is not None:
                d["apply_nonfinite"], d["apply_bad_slots"] = p[:, i, 0], p[:, i, 1]
            out[t] = d
        return out

    def needs(self, stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[Group, int]:
        """The largest per-destination count of each group in a step."""
        return {g: int(stats[g[0]]["max_count"].max()) for g in self.groups}

    # ---------------------------------------------------------------- growth
    def shard_bytes(self, tables: Mapping[str, TableState]) -> int:
        """Bytes all tables take on one device."""
        return sum(st.keys.shape[0] // self.num_shards * self.tables[n].row_bytes()
                   for n, st in tables.items())

    def grow(self, tables: dict[str, TableState], name: str, *, required: bool,
             asked: int | None = None) -> dict[str, TableState]:
        """Doubles table `name` on every shard if the memory cap allows. With
        `required` (a step could not place its ids) a refusal raises, naming
        `asked`: the most ids of the table one shard was asked for."""
        spec, st = self.tables[name], tables[name]
        rows = st.keys.shape[0] // self.num_shards
        extra = rows * spec.row_bytes()
        if not self._may_double(tables, name):
            msg = (f"table {name!r}: growing from {rows} to {2 * rows} rows per shard would "
                   f"take {self.shard_bytes(tables) + extra} bytes per device, over "
                   f"max_shard_bytes={self.max_shard_bytes}")
            if required:
                asked_of = "" if asked is None else (
                    f" (its fullest shard was asked for {asked} ids for {rows} rows in buckets "
                    f"of {self.tables[name].shard_geometry(self.num_shards)[1]})")
                raise TableFullError(msg + f"; this step's ids do not fit its buckets{asked_of}. "
                                           f"Raise max_shard_bytes or the table's capacity: "
                                           f"a shard must hold one step's ids with room to "
                                           f"spare (a host tier holds only evicted rows).")
            log.warning("%s: rows will be evicted by score (counted in the counters)", msg)
            return tables
        log.info("table %r: growing from %d to %d rows per shard", name, rows, 2 * rows)
        tables = dict(tables)
        tables[name] = grow_sharded_table(spec, st, self.mesh, self.axis, 2 * rows)
        return tables

    def grow_limits(self, tables: Mapping[str, TableState]) -> dict[str, int]:
        """Per table, the resident rows of its fullest shard past which it
        doubles before the next step (``grow_threshold`` x rows per shard), or
        never (int64 max) once doubling would pass ``max_shard_bytes``. A step
        that finds a table past its limit is not applied: the host grows the
        table and re-runs it, so growth happens at the same step boundary
        however far ahead steps are dispatched."""
        capped = {n for n in tables if n not in self._capped and not self._may_double(tables, n)}
        if capped:
            log.info("tables %s stay at their size: doubling would pass max_shard_bytes=%s; "
                     "when full they evict rows by score (counted)", sorted(capped),
                     self.max_shard_bytes)
            self._capped |= capped
        return {n: NEVER if n in self._capped else
                int(self.grow_threshold * (st.keys.shape[0] // self.num_shards))
                for n, st in tables.items()}

    def _may_double(self, tables: Mapping[str, TableState], name: str) -> bool:
        rows = tables[name].keys.shape[0] // self.num_shards
        return self.max_shard_bytes is None or (
            self.shard_bytes(tables) + rows * self.tables[name].row_bytes()
            <= self.max_shard_bytes)

    def check_fits(self, state: TrainState, batches: Sequence[Mapping]) -> None:
        """Raises TableFullError before training when a table cannot hold on one
        shard the distinct ids `batches` put there together, even grown as far
        as max_shard_bytes allows (pass the first host batch: one step's ids
        must all have rows). A necessary condition only: a shard's buckets
        fill unevenly, so a step that still does not fit raises as it runs,
        and steps in flight whose ids do not fit together are re-run one at a
        time (tiers.py). Tables with admission (``admit_after`` > 1) are
        not checked: their ids need rows only from their k-th step on."""
        if self.max_shard_bytes is None or not batches:
            return
        for name, spec in self.tables.items():
            if admits(spec):
                continue
            cols = [np.asarray(b["ids"][f.name], np.int64).reshape(-1)
                    for b in batches for f in self.features.values() if f.table == name]
            ids = distinct_ids(*cols) if cols else np.zeros(0, np.int64)
            need = int(np.bincount(owner_of(ids, self.num_shards),
                                   minlength=self.num_shards).max()) if ids.size else 0
            rows = state.tables[name].keys.shape[0] // self.num_shards
            others = self.shard_bytes(state.tables) - rows * spec.row_bytes()
            most = rows
            while others + 2 * most * spec.row_bytes() <= self.max_shard_bytes:
                most *= 2
            if need > most:
                raise TableFullError(
                    f"table {name!r}: {len(batches)} batch(es) put {need} distinct ids on one "
                    f"shard, but a shard can hold at "
                    f"most {most} rows of it within max_shard_bytes={self.max_shard_bytes} "
                    f"({rows} now). Raise max_shard_bytes (with a host tier: the device "
                    f"budget), or lower the batch.")

    def grow_for(self, state: TrainState, *, full: set[str] = frozenset(),
                 refused: set[str] = frozenset(),
                 asked: Mapping[str, int] | None = None) -> TrainState:
        """Grows the tables a step found `full` (past their limit; at the memory
        cap they stay and evict by score from then on) and those that
        `refused` an id a row (required: at the cap, TableFullError naming
        `asked`, the most ids one shard was asked for)."""
        tables = state.tables
        for name in sorted(refused):
            tables = self.grow(tables, name, required=True, asked=(asked or {}).get(name))
        for name in sorted(full - set(refused)):
            grown = self.grow(tables, name, required=False)
            if grown is tables:
                self._capped.add(name)
            tables = grown
        return state if tables is state.tables else state._replace(tables=tables)

    # ----------------------------------------------------------------- steps
    def _specs(self, tables, ids, weights):
        return (jax.tree.map(lambda _: P(self.axis), tables),
                {k: P(self.axis) for k in ids}, {k: P(self.axis) for k in weights})

    def route_fn(self, layout: Layout):
        """shard_map'ped routing of a batch's ids to their owners: (hot, ids)
        -> Routed (lookup.route_local), the argument forward_fn's `routed`
        takes."""
        def fn(hot, ids):
            return jax.shard_map(
                lambda hb, i: route_local(layout, dict(hb), i), mesh=self.mesh,
                in_specs=(jax.tree.map(lambda _: P(), hot), {k: P(self.axis) for k in ids}),
                out_specs=_routed_spec(self.axis, len(layout.groups)))(hot, ids)
        return fn

    def forward_fn(self, layout: Layout, *, train: bool):
        """shard_map'ped forward: (tables, hot, ids, weights, step, live,
        tier_in, max_evictions=0, routed=None) -> (tables, outputs per
        feature, contexts, stats (W*T, S), ok, tier); with `live` false
        nothing is inserted and ok is false. `tier_in` and `tier`: the host
        tier's rows in and out; `max_evictions` (static): the eviction
        outputs' rows per table and device; `routed`: the batch's ids at
        their owners already (route_fn; lookup.forward_local)."""
        def fn(tables, hot, ids, weights, step, live, tier_in, max_evictions=0, routed=None):
            t_spec, i_spec, w_spec = self._specs(tables, ids, weights)
            h_spec = jax.tree.map(lambda _: P(), hot)
            s_spec = jax.tree.map(lambda _: P(self.axis), tier_in)
            r_spec = None if routed is None else _routed_spec(self.axis, len(layout.groups))
            contexts = tuple(_ctx_spec(self.axis) for _ in layout.groups) if train else ()
            tier = {} if not (train and layout.host_tier) else {
                "demoted": {t: Rows(*[P(self.axis)] * 5) for t in layout.looked_up},
                "written": {t: P(self.axis) for names in tier_in.get("staged", {})
                            for t in names}}
            if train and tier_in.get("admission"):
                tier["admission"] = jax.tree.map(lambda _: P(self.axis), tier_in["admission"])
            out_specs = (t_spec, {f: P(self.axis) for f in self.features}, contexts,
                         P(self.axis), P(), tier)

            def body(tb, hb, i, w, s, go, st, r):
                st = dict(st)
                if "staged" in st:  # packed for the transfer (tiers.Staged)
                    st["staged"] = unpack_staged(st["staged"])
                return forward_local(layout, dict(tb), dict(hb), i, w, s, go, st, train=train,
                                     max_evictions=max_evictions, routed=r)

            return jax.shard_map(body, mesh=self.mesh,
                                 in_specs=(t_spec, h_spec, i_spec, w_spec, P(), P(), s_spec,
                                           r_spec),
                                 out_specs=out_specs)(tables, hot, ids, weights, step, live,
                                                      tier_in, routed)
        return fn

    def backward_fn(self, layout: Layout):
        """shard_map'ped backward: routes output gradients to the owners (cold)
        or all-reduces them (hot) and applies the fused optimizers; returns
        (tables, hot, apply problems (W*T, 2))."""
        def fn(tables, hot, grads, contexts, weights, step, ok):
            t_spec, _, w_spec = self._specs(tables, {}, weights)
            h_spec = jax.tree.map(lambda _: P(), hot)

            def body(tb, hb, g, c, w, s, o):
                return backward_local(layout, dict(tb), dict(hb), g, c, w, s, o)

            return jax.shard_map(
                body, mesh=self.mesh,
                in_specs=(t_spec, h_spec, {f: P(self.axis) for f in grads},
                          tuple(_ctx_spec(self.axis) for _ in contexts), w_spec, P(), P()),
                out_specs=(t_spec, h_spec, P(self.axis)))(tables, hot, grads, contexts,
                                                          weights, step, ok)
        return fn

    def make_train_step(self, loss_fn: LossFn, dense_tx: optax.GradientTransformation, *,
                        has_aux: bool = False) -> "ShardedTrainStep":
        """A step that looks up every feature, differentiates ``loss_fn`` with
        respect to the dense params and the looked-up rows, applies ``dense_tx``
        to the params and the tables' fused optimizers on the owners."""
        return ShardedTrainStep(self, loss_fn, dense_tx, has_aux=has_aux)

    def make_eval_fn(self, predict_fn: Callable[[Any, dict, Mapping], Any]) -> "EvalFn":
        """``fn(state, batch) -> predict_fn(params, embeddings, batch)`` without
        inserting anything: an unseen id gets the row it would be created with
        (its deterministic initial value), and the tables are not modified.
        Any batch size works (see EvalFn)."""
        return EvalFn(self, predict_fn)

    def erase(self, state: TrainState, ids: Mapping[str, Any]
              ) -> tuple[TrainState, dict[str, int]]:
        """Removes `ids` (table name -> ids) wherever the table keeps them:
        owner shard, hot fold, host tier (erasure.erase_ids). Returns (state,
        rows erased per table). Between steps only (flush a pipeline first)."""
        return erase_ids(self, state, ids)

    def table_stats(self, tables: Mapping[str, TableState],
                    hot: Mapping[str, TableState] | None = None,
                    admission: Mapping[str, Mapping] | None = None) -> dict[str, dict[str, int]]:
        """Counters summed over the shards and, given `hot`, the hot folds
        (placement.counter_totals), the fullest shard's load, the slots
        (``capacity``), with a host tier its statistics (HostTier.stats) and,
        given the state's `admission`, the ids filtered so far
        (``admission_filtered``, admission.py)."""
        out, tier = {}, self.host_tier.stats(total=True) if self.host_tier is not None else {}
        filtered = filtered_totals(dict(admission or {}))
        for n, total in counter_totals(tables, hot).items():
            d = counters_by_name(total)
            rows = tables[n].keys.shape[0] // self.num_shards
            size = host_gather(tables[n].counters).reshape(self.num_shards, -1)[
                :, COUNTER_NAMES["size"]]
            d["max_shard_load"] = float(size.max() / rows)
            d["capacity"] = int(tables[n].keys.shape[0])  # slots over all shards
            d.update(tier.get(n, {}))
            if n in filtered:
                d["admission_filtered"] = filtered[n]
            out[n] = d
        return out


class _Placed:
    """Where prepare_batch's array `index` goes once placed on the mesh (a
    pytree leaf)."""
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _ctx_spec(axis):
    return TableContext(P(axis), P(axis), P(axis), P(axis), P(axis))


def _routed_spec(axis, groups: int):
    per_group = (P(axis),) * groups
    return Routed(per_group, per_group, per_group, per_group, per_group, P(axis), P())
