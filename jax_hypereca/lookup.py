"""The per-device lookup and update of a sharded step (the model-parallel
fold), run inside ``shard_map`` over the layout's axis.

Per exchange group (tables of one dim and dtype):

forward   dedup the local ids per table (unique; hot-fold ids are served by
          the local replica) -> one tagged list per group -> bucketize by
          owner into one static per-destination buffer -> exchange (id,
          table tag) to the owners -> find_or_insert per table (or find, for
          evaluation) + one tagged gather on the owner -> exchange rows back
          -> expand by the inverse and pool per feature.
backward  d loss / d pooled -> per unique id (the pooling's transpose) ->
          scattered into the same buffers -> exchange to the owners -> the
          owner sums the senders' gradients of a slot and applies the fused
          optimizer; hot rows are all-reduced (replication.apply_hot).

How blocks move between devices is the layout's Exchange (exchange.py).
Per-destination capacities are static. A batch that needs more is detected
before anything is updated: every device learns it through one max-reduction,
the exchange then carries only padding (no insert, no update) and the host
re-runs the step with larger capacities (see steps.py). Likewise, when an
owner must refuse an id a row (its bucket is full of rows this very step
uses), a second max-reduction cancels the step's updates and the host grows
the table before re-running it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jax_hypereca import _ops
from jax_hypereca.admission import admit, admits, member
from jax_hypereca.errors import ERASED_KEY, PADDING_ID
from jax_hypereca.features import FeatureSpec
from jax_hypereca.layout import STAT_INDEX, STAT_NAMES, Layout
from jax_hypereca.replication import apply_hot, split_hot, with_hot_rows
from jax_hypereca.table import Rows, TableSpec, TableState, apply_gradients, find_or_insert
from jax_hypereca.table import find as table_find
from jax_hypereca.table import find_slots


class TableContext(NamedTuple):
    """What the backward pass of one exchange group needs from its forward."""

    inverse: jax.Array    # (n,) int32 local id -> index into the group's unique list
    position: jax.Array   # (N,) int32 unique id -> send-buffer position, -1 padding/hot
    source: jax.Array     # (W * cap,) int32 send-buffer position -> unique id, -1 empty
    slots: jax.Array      # (T, W * cap) int32 owner slots per table, -1 elsewhere
    hot_slots: jax.Array  # (N,) int32 slot in the table's hot fold, -1 when cold


def _pool_rows(feature: FeatureSpec, r, inverse, weights, batch: int, *, masked: bool = True):
    """The feature's gathered rows r ([b, L, D], one per id position, any row
    at a padding position) -> its output ([b, D] or [b, L, D]). With
    ``masked`` false the rows at padding positions are not zeroed (for the
    transpose, which drops those positions anyway)."""
    L = feature.max_ids
    valid = (inverse >= 0).reshape(batch, L)
    w = valid.astype(jnp.float32)
    if weights is not None:
        w = w * weights.reshape(batch, L)
    if masked or weights is not None:
        r = r * w[..., None]
    if feature.pooling == "none":
        return r
    s = r.sum(axis=1)
    if feature.pooling == "sum":
        return s
    den = w.sum(axis=1, keepdims=True)
    return jnp.where(den > 0, s / jnp.where(den > 0, den, 1.0), 0.0)


def _feature_slices(layout: Layout, group, batch: int):
    """(feature, start, length) of each feature of the group in its inverse."""
    out, start = [], 0
    for f in layout.group_features(group):
        out.append((f, start, batch * f.max_ids))
        start += batch * f.max_ids
    return out


def _batch_major(parts, batch: int):
    """Per-feature [b * L_f] or [b, L_f, ...] pieces -> one [b, sum L_f, ...]
    array, sample-major like the models' inputs (DLRM stacks its vectors
    d-major, [b, d, n], so XLA still copies once between the two layouts;
    about 5% faster per step than feature-major in an A/B on a busy machine)."""
    parts = [x.reshape(batch, -1) if x.ndim == 1 else x for x in parts]
    return jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _pool_group(layout: Layout, group, urows, inverse, weights, batch: int):
    """Every feature of the group from its unique rows (one gather for all,
    batch-major)."""
    slices = _feature_slices(layout, group, batch)
    idx = _batch_major([inverse[start:start + n] for _, start, n in slices], batch)
    r = jnp.take(urows, jnp.maximum(idx, 0), axis=0)
    out, col = {}, 0
    for f, start, n in slices:
        out[f.name] = _pool_rows(f, r[:, col:col + f.max_ids], inverse[start:start + n],
                                 weights.get(f.name) if f.weighted else None, batch)
        col += f.max_ids
    return out


def _pool_group_grad(layout: Layout, group, grads, inverse, weights, batch: int, n_unique: int):
    """The transpose of _pool_group: d loss / d outputs -> d loss / d unique
    rows. Each feature's pooling is differentiated on its own (the cotangent
    of its gathered rows); then one scatter-add per round sums them per
    unique id, where round k holds the k-th feature of every table (features
    of different tables touch disjoint unique ids, so within a round each
    id's terms are added in (sample, bag position) order whatever the
    layout). Autodiff of the per-feature gathers would instead materialize
    and add one (n_unique, D) buffer per feature: 26 for Criteo, most of the
    step's embedding time on XLA:CPU. With one or two features per table the
    sums are bit for bit those of autodiff (IEEE addition commutes)."""
    ax, dim = layout.axis, layout.spec(group[0]).dim
    rounds: list[tuple[list, list]] = []
    seen: dict[str, int] = {}
    for f, start, n in _feature_slices(layout, group, batch):
        w = weights.get(f.name) if f.weighted else None
        inv = inverse[start:start + n]
        # The linearization point must vary over the axis like the data: an
        # axis-invariant one would make the transpose psum the gradients.
        zero = lax.pcast(jnp.zeros((batch, f.max_ids, dim), jnp.float32), ax, to="varying")
        # padding positions are dropped below, so the 0/1 mask need not
        # multiply the cotangent (x * 1 == x: the same bits, one pass fewer)
        _, vjp = jax.vjp(lambda r, f=f, inv=inv, w=w: _pool_rows(f, r, inv, w, batch,
                                                                 masked=False), zero)
        k = seen[f.table] = seen.get(f.table, -1) + 1
        if k == len(rounds):
            rounds.append(([], []))
        rounds[k][0].append(vjp(grads[f.name])[0])
        rounds[k][1].append(jnp.where(inv >= 0, inv, n_unique))
    total = None
    for cts, idx in rounds:
        part = jnp.zeros((n_unique, dim), jnp.float32).at[_batch_major(idx, batch)].add(
            _batch_major(cts, batch), mode="drop")
        total = part if total is None else total + part
    return total


def _dedup_group(layout: Layout, group, ids, hot):
    """Per table: unique ids, split into the hot fold (found in the local
    replica) and the cold rest; concatenated over the group with table tags.
    Returns (cold keys (N,), tags (N,), hot slots (N,), inverse (n,),
    occurrences (N,): how often the batch looks each unique id up, stats)."""
    keys, tags, hot_slots, inverse, occurrences, stats, offset = [], [], [], [], [], [], 0
    for i, t in enumerate(group):
        flat = jnp.concatenate([ids[f.name].reshape(-1) for f in layout.features_of(t)])
        uniq, inv, count = _ops.unique(flat)
        uniq, hs = split_hot(layout.spec(t), hot.get(t), uniq)
        keys.append(uniq)
        hot_slots.append(hs)
        tags.append(jnp.where(uniq != PADDING_ID, i, -1).astype(jnp.int32))
        inverse.append(jnp.where(inv >= 0, inv + offset, -1))
        occurrences.append(jnp.zeros(flat.shape, jnp.int32).at[
            jnp.where(inv >= 0, inv, flat.shape[0])].add(1, mode="drop"))
        stats.append(((flat != PADDING_ID).sum(), count, (hs >= 0).sum()))
        offset += flat.shape[0]
    return (jnp.concatenate(keys), jnp.concatenate(tags), jnp.concatenate(hot_slots),
            jnp.concatenate(inverse), jnp.concatenate(occurrences), stats)


def _pack_tags(tags, occurrences):
    """The id payload's second column: each entry's table tag (int32, -1 for
    an empty entry) in the low 32 bits and how often the sender's batch
    looks the id up in the high ones (0 for an empty entry), so an owner can
    count lookups as well as ids (``lookups``, ``lookup_hits``)."""
    return tags.astype(jnp.int64) + (occurrences.astype(jnp.int64) << 32)


def _unpack_tags(column):
    """_pack_tags' inverse: (tags int32, occurrences int64)."""
    low = column & jnp.int64(0xFFFFFFFF)
    tags = jnp.where(low >= jnp.int64(1 << 31), low - jnp.int64(1 << 32), low).astype(jnp.int32)
    return tags, (column - tags.astype(jnp.int64)) >> 32


def _bucketize_group(keys, tags, occurrences, W: int, cap: int):
    """The group's unique cold ids into one (W, cap) send buffer by owner.
    Returns (send, counts per owner, position of each id in the buffer (-1:
    padding or hot), source: the id at each position (-1: empty), the
    packed tags of each position)."""
    send, counts, position = _ops.bucketize(keys, num_shards=W, capacity=cap)
    source = jnp.full((W * cap + 1,), -1, jnp.int32).at[
        jnp.where(position >= 0, position, W * cap)].set(
            jnp.arange(position.shape[0], dtype=jnp.int32))[:-1]
    at = jnp.maximum(source, 0)
    tag_send = _pack_tags(jnp.where(source >= 0, tags[at], -1),
                          jnp.where(source >= 0, occurrences[at], 0)).reshape(W, cap)
    return send, counts, position, source, tag_send


class Routed(NamedTuple):
    """One batch's ids at their owners: the part of a step's index stage that
    reads no table (only the hot folds' keys, fixed between re-plans), so a
    pipelined step can run it for the batch after its own (pipeline.py).
    Per exchange group unless noted."""

    received: tuple  # (W * cap, 2) int64: (id, packed tag) as this owner got them
    inverse: tuple   # (n,) int32 local id -> index into the group's unique list
    position: tuple  # (N,) int32 unique id -> send-buffer position, -1 padding/hot
    source: tuple    # (W * cap,) int32 send-buffer position -> unique id, -1 empty
    hot_slots: tuple  # (N,) int32 slot in the table's hot fold, -1 when cold
    stats: jax.Array  # (T, S) int64: ids, unique, hot_unique, remote_unique, max_count
    fits: jax.Array   # () bool: every send buffer had room (the same on every device)


def route_local(layout: Layout, hot: dict[str, TableState], ids: dict) -> Routed:
    """Per-device dedup, owner bucketing and id exchange of a batch (call
    inside shard_map over layout.axis). A batch some device's buffers cannot
    hold (``fits`` false: one max-reduction tells every device) sends only
    padding; the step that serves it is then a no-op and the host re-runs it
    with larger capacities (steps.py)."""
    W, ax = layout.num_shards, layout.axis
    me = lax.axis_index(ax)
    local, stats = [], {}
    too_big = jnp.zeros((), jnp.int32)
    for group, cap in zip(layout.groups, layout.capacities):
        with jax.named_scope("stage_dedup"):
            keys, tags, hot_slots, inverse, occ, tstats = _dedup_group(layout, group, ids, hot)
        with jax.named_scope("stage_bucketize"):
            send, counts, position, source, tag_send = _bucketize_group(keys, tags, occ, W, cap)
            too_big = jnp.maximum(too_big, (counts > cap).any().astype(jnp.int32))
        local.append((inverse, position, source, hot_slots, send, tag_send))
        remote = (position >= 0) & (position // cap != me)
        for i, t in enumerate(group):
            st = jnp.zeros((len(STAT_NAMES),), jnp.int64)
            st = st.at[STAT_INDEX["ids"]].set(tstats[i][0]).at[STAT_INDEX["unique"]].set(tstats[i][1])
            st = st.at[STAT_INDEX["hot_unique"]].set(tstats[i][2])
            st = st.at[STAT_INDEX["remote_unique"]].set((remote & (tags == i)).sum())
            stats[t] = st.at[STAT_INDEX["max_count"]].set(counts.max())
    # One max-reduction tells every device whether some buffer would overflow;
    # then only padding is exchanged.
    fits = lax.pmax(too_big, ax) == 0
    received = []
    for (*_, send, tag_send), cap in zip(local, layout.capacities):
        with jax.named_scope("stage_id_exchange"):
            payload = jnp.stack([jnp.where(fits, send, PADDING_ID), tag_send], axis=-1)
            received.append(layout.exchange.send_ids(payload, ax, W).reshape(W * cap, 2))
    inverse, position, source, hot_slots = (tuple(x) for x in zip(*(l[:4] for l in local)))
    return Routed(tuple(received), inverse, position, source, hot_slots,
                  jnp.stack([stats[t] for t in layout.looked_up]), fits)


def forward_local(layout: Layout, tables: dict[str, TableState], hot: dict[str, TableState],
                  ids: dict, weights: dict, step, live, tier_in: dict, *, train: bool,
                  max_evictions: int = 0, routed: Routed | None = None):
    """Per-device forward exchange (call inside shard_map over layout.axis).
    `hot` holds the replicated hot folds (every device has all of them).
    `routed`: the batch's ids already at their owners (route_local, run by
    the step before; None: routed here). With `live` false the call is a
    no-op, as after an overflow: nothing is inserted, and ``ok`` comes back
    false (a pipelined step behind one that failed; see pipeline.py).
    `tier_in` (host tier, tiers.py): per table, ``staged`` rows of this
    device's ids, written into the slots find_or_insert gives them (train)
    or served where the device has none, and ``victims``, the keys steps
    still in flight evicted. `max_evictions` (0: one per id): the most rows a
    table may evict here; inserts past it are refused (``failed``,
    ``evicted`` at the cap: re-run). Stages run in named scopes
    ``stage_<name>`` (STAGES), for profiles. Returns (tables, outputs per
    feature, contexts per group, stats (T, S), ok, tier): ``tier`` (train,
    host tier) holds per table the rows evicted (``demoted``) and the staged
    rows written."""
    W, ax = layout.num_shards, layout.axis
    batch = next(iter(ids.values())).shape[0]
    if routed is None:
        routed = route_local(layout, hot, ids)
    stats = {t: routed.stats[k] for k, t in enumerate(layout.looked_up)}
    ok = routed.fits & live
    urows, contexts = [], []
    tier = _tier_out(layout, tier_in, train=train)
    refused = jnp.zeros((), jnp.int32)
    for gi, (group, cap) in enumerate(zip(layout.groups, layout.capacities)):
        position, hot_slots = routed.position[gi], routed.hot_slots[gi]
        recv = routed.received[gi]
        # a step that must not run (see `live`) serves padding only
        q_keys, (q_tags, q_occ) = jnp.where(ok, recv[:, 0], PADDING_ID), _unpack_tags(recv[:, 1])
        if train:
            rows, slots, refused = _insert_and_gather(layout, group, tables, q_keys, q_tags,
                                                      q_occ, step, stats, refused, tier_in,
                                                      tier, max_evictions, live)
            contexts.append(TableContext(routed.inverse[gi], position, routed.source[gi],
                                         slots, hot_slots))
        else:
            with jax.named_scope("stage_gather"):
                rows = _rows_or_init(layout, group, tables, q_keys, q_tags,
                                     tier_in.get("staged", {}))
            for i, t in enumerate(group):  # find gives a reserved id no row: reported
                reserved = ((q_tags == i) & (q_keys == ERASED_KEY)).sum()
                stats[t] = stats[t].at[STAT_INDEX["reserved"]].set(reserved)
        with jax.named_scope("stage_row_exchange"):
            back = layout.exchange.return_rows(rows.reshape(W, cap, -1), ax, W)
        with jax.named_scope("stage_pool"):
            # zeros for hot ids and padding (position -1); every other
            # position is bucketize's, inside the buffer (a bad one would be a
            # bug: it cancels the call below, and the host raises)
            cold, bad = _ops.gather(back.reshape(W * cap, -1).astype(jnp.float32), position)
            refused = jnp.maximum(refused, (bad > 0).astype(jnp.int32))
            urows.append(with_hot_rows(layout, group, hot, hot_slots, cold, batch))
    # An id refused a row (its bucket is full of this step's rows): nothing is
    # updated this step; the host grows the table and re-runs it.
    ok = ok & (lax.pmax(refused, ax) == 0)
    outputs = {}
    with jax.named_scope("stage_pool"):
        for gi, group in enumerate(layout.groups):
            outputs.update(_pool_group(layout, group, urows[gi], routed.inverse[gi], weights,
                                       batch))
    stat_matrix = jnp.stack([stats[t] for t in layout.looked_up])
    return tables, outputs, tuple(contexts) if train else (), stat_matrix, ok, tier


def _tier_out(layout: Layout, tier_in: dict, *, train: bool) -> dict:
    """A train step's extra outputs, filled per table as it goes: with a host
    tier the rows evicted and the staged rows written; with admission the
    sketches (counted by `_admitted`)."""
    tier = {"demoted": {}, "written": {}} if train and layout.host_tier else {}
    if train and tier_in.get("admission"):
        tier["admission"] = dict(tier_in["admission"])
    return tier


def _insert_and_gather(layout: Layout, group, tables, q_keys, q_tags, q_occ, step, stats,
                       refused, tier_in, tier, max_evictions: int = 0, live=True):
    """The owner's side of a train step for one exchange group: find_or_insert
    of the received ids per table (tables and stats updated in place), the
    host tier's staged rows written into their fresh slots and the evicted
    rows kept for the host (into `tier`), then one tagged gather of their
    rows. Returns (rows, slots (T, W * cap), refused: whether an id was
    refused a row here, or inserted afresh though a step in flight evicted
    it: its row is not yet in the host tier, see tiers.py)."""
    staged, victims = tier_in.get("staged", {}), tier_in.get("victims", {})
    slots = []
    for i, t in enumerate(group):
        with jax.named_scope("stage_find_or_insert"):
            q, inv = jnp.where(q_tags == i, q_keys, PADDING_ID), None
            if layout.num_shards > 1:
                # An id arrives once from each device that looked it up: the owner
                # looks it up once, so its scores count steps whatever the mesh.
                # (On one device each id came once: deduplicated locally.)
                q, inv, _ = _ops.unique(q)
            if t in tier.get("admission", {}):
                q = _admitted(layout.spec(t), tables[t], q, staged.get(t), victims.get(t),
                              tier, stats)
            tables[t], res = find_or_insert(
                layout.spec(t), tables[t], q, step=step, pin_from=None if layout.evict else 0,
                max_evictions=min(max_evictions, q.shape[0]) if max_evictions else None)
            if "demoted" in tier:
                tier["demoted"][t] = Rows(*res.evicted)
                if t in staged:
                    tables[t], tier["written"][t] = write_staged(layout.spec(t), tables[t],
                                                                 staged[t])
                if victims.get(t):
                    # a no-op step (not live) inserts nothing, but shares its step
                    # count with the stale step before it: nothing to count
                    stale = jnp.where(live, _stale(layout.spec(t), tables[t],
                                                   jnp.concatenate(victims[t]), step), 0)
                    stats[t] = stats[t].at[STAT_INDEX["stale"]].set(stale)
                    refused = jnp.maximum(refused, (stale > 0).astype(jnp.int32))
            slots.append(res.slots if inv is None else
                         jnp.where(inv >= 0, res.slots[jnp.maximum(inv, 0)], -1))
        stats[t] = stats[t].at[STAT_INDEX["queries"]:STAT_INDEX["failed"] + 1].set(res.status[:6])
        stats[t] = _count_lookups(stats[t], (q_tags == i) & (q_keys != PADDING_ID), q_occ,
                                  res.found if inv is None else
                                  (inv >= 0) & res.found[jnp.maximum(inv, 0)])
        stats[t] = stats[t].at[STAT_INDEX["resident"]].set(tables[t].counters[0])
        refused = jnp.maximum(refused, (res.status[5] > 0).astype(jnp.int32))
    with jax.named_scope("stage_gather"):
        # each entry has a slot in its own table only (-1 in the others);
        # every slot is find_or_insert's for that table: in range or -1,
        # so gather_tagged has no bad slot to report
        rows = _ops.gather_tagged(q_tags, jnp.max(jnp.stack(slots), axis=0),
                                  [tables[t].values for t in group])
    return rows, jnp.stack(slots), refused


def _count_lookups(stats, mine, occurrences, found):
    """``lookups``: how often the senders' batches look up the ids received
    for this table (every position, duplicates included); ``lookup_hits``:
    those whose row was resident before the step (the per-lookup hit rate
    of a cache: a popular id counts as often as it is looked up). Per
    received entry: `mine` (of this table), its sender's `occurrences`,
    whether its id was `found`."""
    occ = jnp.where(mine, occurrences, 0)
    return (stats.at[STAT_INDEX["lookups"]].set(occ.sum())
            .at[STAT_INDEX["lookup_hits"]].set(jnp.where(found, occ, 0).sum()))


def _admitted(spec: TableSpec, table: TableState, q, staged, victims, tier, stats):
    """The owner's unique ids `q` with those admission filters out replaced
    by padding (admission.py); the table's sketch in `tier` counts them and
    its ``filtered`` statistic says how many. An id with a row -- resident,
    staged from the host tier, or evicted by a step in flight -- passes."""
    _, known = find_slots(spec, table, q)
    if staged is not None:  # each device's staged keys are sorted (tiers.Staged)
        known = known | member(q, staged.keys)
    if victims:
        known = known | member(q, jnp.sort(jnp.concatenate(victims)))
    name = spec.name
    tier["admission"][name], admitted, filtered = admit(spec, tier["admission"][name], q,
                                                        known)
    stats[name] = stats[name].at[STAT_INDEX["filtered"]].set(filtered)
    return jnp.where(admitted, q, PADDING_ID)


def write_staged(spec: TableSpec, table: TableState, rows: Rows):
    """Writes host-tier rows into the slots their ids have (find_or_insert
    of this step gave them fresh ones): values, optimizer state, and the
    frequency added to this access's. Returns (table, written (S,) bool);
    an id without a slot (refused, or the step inserted nothing) is not
    written and stays the host's."""
    slots, found = find_slots(spec, table, rows.keys)
    written = found & (rows.keys != PADDING_ID)
    at = jnp.where(written, slots, table.keys.shape[0])  # out of range: dropped
    return table._replace(
        values=table.values.at[at].set(rows.values.astype(table.values.dtype), mode="drop"),
        opt_state=table.opt_state.at[at].set(rows.opt_state, mode="drop"),
        freq=table.freq.at[at].add(rows.freq, mode="drop")), written


def _stale(spec: TableSpec, table: TableState, victims, step):
    """How many `victims` (rows steps in flight evicted, not yet in the host
    tier) this step inserted afresh. A victim is absent when a live step
    starts (a step that re-inserted it earlier was stale, so not applied,
    and every step after it is a no-op), so one this step's find_or_insert
    left resident and accessed at `step` was inserted by it. One native
    find of the few victims: no sort, no search of the step's ids."""
    slots, found = find_slots(spec, table, victims)
    return (found & (table.last_step[jnp.maximum(slots, 0)] == step)).sum()


def _rows_or_init(layout: Layout, group, tables, keys, tags, staged):
    """Evaluation rows: the resident row, else the host tier's staged row,
    else the row an insert would create (one find per table of the group;
    the others' entries come back zero)."""
    rows = None
    for i, t in enumerate(group):
        spec = layout.spec(t)
        mine = jnp.where(tags == i, keys, PADDING_ID)
        # with admission an id without a row was filtered in training: zero
        r, found = table_find(spec, tables[t], mine, miss_init=not admits(spec))
        if t in staged:  # each device's staged keys are sorted (tiers.Staged)
            sk = staged[t].keys
            at = jnp.clip(jnp.searchsorted(sk, mine), 0, sk.shape[0] - 1)
            hit = (sk[at] == mine) & (mine != PADDING_ID) & ~found
            r = jnp.where(hit[:, None], staged[t].values[at].astype(r.dtype), r)
        rows = r if rows is None else rows + r  # other tables' entries are zero rows
    return rows


def backward_local(layout: Layout, tables: dict[str, TableState], hot: dict[str, TableState],
                   grads: dict, contexts, weights: dict, step, ok):
    """Per-device backward exchange: routes d loss / d outputs of cold ids to
    their owners, which apply the fused optimizer; sums the hot ids' gradients
    over all devices (one all-reduce per group) and applies them identically
    on every replica. Returns (tables, hot, apply problems (T, 2): gradient
    rows skipped as non-finite, slots outside the table)."""
    W, ax = layout.num_shards, layout.axis
    batch = next(iter(grads.values())).shape[0]
    problems = {}
    for group, cap, ctx in zip(layout.groups, layout.capacities, contexts):
        dim = layout.spec(group[0]).dim
        with jax.named_scope("stage_pool_grad"):
            g_unique = _pool_group_grad(layout, group, grads, ctx.inverse, weights, batch,
                                        ctx.position.shape[0])
            # zeros where the buffer is empty; `source` indexes the unique
            # list by construction (a bad entry is counted as a bad slot)
            buf, bad = _ops.gather(g_unique, ctx.source)
        with jax.named_scope("stage_grad_exchange"):
            recv = layout.exchange.send_grads(buf.reshape(W, cap, dim), ax, W)
        g = recv.reshape(W * cap, dim)
        with jax.named_scope("stage_apply"):
            for i, t in enumerate(group):
                slot = jnp.where(ok, ctx.slots[i], -1)
                tables[t], status = apply_gradients(layout.spec(t), tables[t], slot, g,
                                                    step=step)
                problems[t] = status[1:3] + jnp.stack([jnp.zeros_like(bad), bad])
            hot, hot_problems = apply_hot(layout, group, hot, ctx.hot_slots, g_unique, batch,
                                           step, ok)
        for t, p in hot_problems.items():
            problems[t] = problems[t] + p
    return tables, hot, jnp.stack([problems[t] for t in layout.looked_up])
