"""Id frequency counting for the replication planner (numpy only).

Two counters see the same input, one *step* at a time: a list with one
int64 id array per device (or a 2-D array, one row per device).  Within a
step every device counts an id at most once (per-device dedup: the exchange
sends each distinct id once per device), reserved ids (-1 padding, -2) are
dropped, and with an ``owner_fn`` only ids owned by *another* device are
counted, so the counts describe exactly what the all-to-all carries.

* :class:`ExactCounter` / :func:`collect_table_stats`: exact counts over a
  sample of steps (default 100, the paper's "peek") -> :class:`TableStats`;
  :func:`coverage`, :func:`covered_lookups`, :func:`exchanged_lookups`,
  :func:`lookups_per_step` and :func:`hot_ids` read one.
* :class:`DecayedCounter`: bounded-memory online counter with exponential
  decay for use during training (decayed Misra-Gries summary, see its
  docstring for the error bound).
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable, Sequence

import numpy as np

from .constants import DEFAULT_PEEK_BATCHES, RESERVED_IDS
from .errors import PlannerError
from .types import TableStats

OwnerFn = Callable[[np.ndarray], np.ndarray]
"""``owner_fn(ids) -> device index per id`` (same shape, values in [0, W))."""

Batch = Sequence[np.ndarray] | np.ndarray
"""One step: one id array per device, device d at position d."""

_RESERVED = np.asarray(RESERVED_IDS, dtype=np.int64)


# --------------------------------------------------------------------------
# Coverage.
# --------------------------------------------------------------------------


def coverage(
    sorted_counts: np.ndarray,
    hot_rows: int | np.ndarray,
    *,
    prefix: np.ndarray | None = None,
) -> np.ndarray | float:
    """rho(R) = sum(counts[:R]) / sum(counts) for descending ``sorted_counts``.

    Vectorised: ``hot_rows`` may be an int or an integer array; R larger than
    the number of ids is clipped (rho = 1).  Returns 0 when the counts sum to
    zero.  ``prefix`` (``[0, cumsum(counts)...]``) may be passed to reuse it.
    """
    if prefix is None:
        c = np.asarray(sorted_counts).reshape(-1)
        prefix = np.concatenate(([0], np.cumsum(c)))
    r = np.asarray(hot_rows)
    if not np.issubdtype(r.dtype, np.integer):
        if np.any(r != np.floor(r)):
            raise PlannerError("coverage(R): R must be integers")
        r = r.astype(np.int64)
    if np.any(r < 0):
        raise PlannerError("coverage(R): R must be >= 0")
    n = prefix.size - 1
    total = prefix[-1]
    covered = prefix[np.minimum(r, n)]
    if total == 0:
        out = np.zeros(np.shape(covered), dtype=np.float64)
    else:
        out = covered / float(total)
    return float(out) if np.ndim(out) == 0 else out


def prefix_sums(sorted_counts: np.ndarray) -> np.ndarray:
    """``[0, cumsum(counts)...]`` (int64): ``prefix[R]`` = lookups the top-R ids absorb."""
    return np.concatenate(([0], np.cumsum(np.asarray(sorted_counts).reshape(-1), dtype=np.int64)))


# --------------------------------------------------------------------------
# Reading TableStats.
# --------------------------------------------------------------------------


def exchanged_lookups(stats: TableStats) -> int:
    """``counts.sum()``: deduplicated (remote) lookups in the sample."""
    return int(prefix_sums(stats.counts)[-1])


def lookups_per_step(stats: TableStats) -> float:
    """Mean deduplicated (remote) lookups per device per step, N."""
    return exchanged_lookups(stats) / (stats.num_batches * stats.num_devices)


def covered_lookups(
    stats: TableStats, hot_rows: int | np.ndarray, *, prefix: np.ndarray | None = None
) -> np.ndarray | int:
    """Sample lookups absorbed by the top-R ids (exact integer prefix sums;
    vectorised over R; R beyond ``stats.num_ids`` is clipped).  ``prefix``
    (:func:`prefix_sums` of the counts) may be passed to reuse it."""
    r = np.asarray(hot_rows)
    if np.any(r < 0):
        raise PlannerError(f"hot_rows must be >= 0, got {int(np.min(r))}")
    prefix = prefix_sums(stats.counts) if prefix is None else prefix
    out = prefix[np.minimum(r, stats.num_ids)]
    return int(out) if out.ndim == 0 else out


def hot_ids(stats: TableStats, hot_rows: int) -> np.ndarray:
    """The top-R ids (read-only view)."""
    return stats.ids[: max(0, min(int(hot_rows), stats.num_ids))]


# --------------------------------------------------------------------------
# Per-step deduplication.
# --------------------------------------------------------------------------


def _device_arrays(batch: Batch) -> list[np.ndarray]:
    if isinstance(batch, np.ndarray):
        if batch.ndim == 1:
            raise PlannerError(
                "a step must hold one id array per device (list of arrays or a "
                "2-D array with one row per device), got a 1-D array"
            )
        return [np.asarray(row).reshape(-1) for row in batch]
    return [np.asarray(a).reshape(-1) for a in batch]


def dedup_step(
    batch: Batch,
    *,
    num_devices: int | None = None,
    owner_fn: OwnerFn | None = None,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Count one step the way the exchange sees it.

    Returns ``(ids, counts, raw, deduplicated)``: distinct ids (ascending),
    for each the number of devices whose deduplicated (remote) lookups
    contain it, the number of non-reserved raw lookups, and the number of
    lookups after per-device dedup (before the remote filter).
    """
    arrays = _device_arrays(batch)
    if num_devices is not None and len(arrays) != num_devices:
        raise PlannerError(
            f"step has {len(arrays)} device shards but num_devices={num_devices}; "
            "pass one id array per device"
        )
    raw = 0
    dedup = 0
    kept: list[np.ndarray] = []
    for device, ids in enumerate(arrays):
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise PlannerError(f"ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64, copy=False)
        ids = ids[~np.isin(ids, _RESERVED)]
        raw += int(ids.size)
        u = np.unique(ids)
        dedup += int(u.size)
        if owner_fn is not None and u.size:
            owner = np.asarray(owner_fn(u)).reshape(-1)
            if owner.shape != u.shape:
                raise PlannerError("owner_fn must return one device index per id")
            u = u[owner != device]
        kept.append(u)
    if kept:
        ids, counts = np.unique(np.concatenate(kept), return_counts=True)
    else:
        ids, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    return ids.astype(np.int64), counts.astype(np.int64), raw, dedup


def _merge_counts(
    ids_a: np.ndarray, counts_a: np.ndarray, ids_b: np.ndarray, counts_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sum two (ids, counts) tables; ids ascending in the result."""
    if ids_a.size == 0:
        return ids_b, counts_b
    if ids_b.size == 0:
        return ids_a, counts_a
    ids = np.concatenate((ids_a, ids_b))
    uniq, inv = np.unique(ids, return_inverse=True)
    summed = np.zeros(uniq.size, dtype=counts_a.dtype if counts_a.dtype == counts_b.dtype else np.float64)
    np.add.at(summed, inv, np.concatenate((counts_a, counts_b)))
    return uniq, summed


# --------------------------------------------------------------------------
# Exact counting.
# --------------------------------------------------------------------------


class ExactCounter:
    """Exact per-device-deduplicated (remote) id counts over sampled steps.

    Memory is O(distinct ids seen).  Steps are buffered and merged every
    ``merge_every`` steps to amortise the sort.
    """

    def __init__(
        self,
        *,
        num_devices: int,
        owner_fn: OwnerFn | None = None,
        merge_every: int = 8,
    ) -> None:
        if num_devices < 1:
            raise PlannerError("num_devices must be >= 1")
        self.num_devices = int(num_devices)
        self.owner_fn = owner_fn
        self.merge_every = max(1, int(merge_every))
        self.num_batches = 0
        self.total_lookups = 0
        self.deduplicated_lookups = 0
        self._ids = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, batch: Batch) -> None:
        """Count one step."""
        ids, counts, raw, dedup = dedup_step(
            batch, num_devices=self.num_devices, owner_fn=self.owner_fn
        )
        self.num_batches += 1
        self.total_lookups += raw
        self.deduplicated_lookups += dedup
        self._pending.append((ids, counts))
        if len(self._pending) >= self.merge_every:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        ids = np.concatenate([self._ids] + [p[0] for p in self._pending])
        cnt = np.concatenate([self._counts] + [p[1] for p in self._pending])
        self._pending.clear()
        uniq, inv = np.unique(ids, return_inverse=True)
        self._ids = uniq
        summed = np.zeros(uniq.size, dtype=np.int64)
        np.add.at(summed, inv, cnt)
        self._counts = summed

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, counts)`` with ids ascending."""
        self._flush()
        return self._ids.copy(), self._counts.copy()

    def to_table_stats(self, *, name: str, dim: int) -> TableStats:
        """Freeze the counts into a :class:`TableStats`."""
        if self.num_batches == 0:
            raise PlannerError(
                f"no batches were counted for table '{name}'; feed at least one step"
            )
        ids, counts = self.counts()
        return TableStats.from_counts(
            name=name,
            dim=dim,
            ids=ids,
            counts=counts,
            num_batches=self.num_batches,
            num_devices=self.num_devices,
            total_lookups=self.total_lookups,
            deduplicated_lookups=self.deduplicated_lookups,
            remote_only=self.owner_fn is not None,
        )


def collect_table_stats(
    batches: Iterable[Batch],
    *,
    name: str,
    dim: int,
    num_devices: int,
    owner_fn: OwnerFn | None = None,
    max_batches: int = DEFAULT_PEEK_BATCHES,
) -> TableStats:
    """Exact stats over the first ``max_batches`` steps of ``batches``.

    With ``owner_fn`` the counts are remote-only (exactly the exchange's
    traffic); without it they include ids each device owns itself.
    """
    if max_batches < 1:
        raise PlannerError("max_batches must be >= 1")
    counter = ExactCounter(num_devices=num_devices, owner_fn=owner_fn)
    for batch in itertools.islice(batches, max_batches):
        counter.update(batch)
    return counter.to_table_stats(name=name, dim=dim)


# --------------------------------------------------------------------------
# Online counting with decay.
# --------------------------------------------------------------------------


class DecayedCounter:
    """Bounded-memory, exponentially decayed heavy-hitter counter.

    Method: a Misra-Gries ("frequent items") summary with at most
    ``capacity`` counters, updated one step at a time by the mergeable-
    summary rule (Agarwal et al., "Mergeable Summaries", PODS 2012):

    1. multiply every stored counter by ``decay`` (the step's weight is 1,
       a step s steps old weighs ``decay**s``);
    2. add the step's exact deduplicated counts (new ids start from 0);
    3. if more than ``capacity`` ids remain, let delta be the
       (capacity+1)-th largest value, subtract delta from every counter and
       drop those <= 0 (at most ``capacity`` survive).

    Guarantee (decayed true count D_x = sum over steps of
    ``decay**age * count``): ``D_x - error_bound <= estimate(x) <= D_x`` for
    every id, stored or not, where ``error_bound`` accumulates the decayed
    deltas and never exceeds ``(total_weight - sum(estimates)) /
    (capacity + 1) <= total_weight / (capacity + 1)``.  Every subtraction
    of delta removes at least (capacity+1)*delta of mass, which gives the
    second inequality.  Hence every id with D_x > error_bound is stored,
    and the top ids are found once their decayed counts are separated by
    more than ``error_bound``.

    Memory: ``capacity`` (id, float) pairs plus one step's distinct ids.
    """

    def __init__(
        self,
        capacity: int,
        *,
        decay: float = 0.99,
        num_devices: int | None = None,
        owner_fn: OwnerFn | None = None,
    ) -> None:
        if capacity < 1:
            raise PlannerError("DecayedCounter capacity must be >= 1")
        if not (0.0 < decay <= 1.0):
            raise PlannerError(f"DecayedCounter decay must be in (0, 1], got {decay}")
        self.capacity = int(capacity)
        self.decay = float(decay)
        self.num_devices = num_devices
        self.owner_fn = owner_fn
        self.steps = 0
        self.total_weight = 0.0
        """Decayed number of counted (deduplicated, remote) lookups."""
        self.error_bound = 0.0
        """Largest possible undercount of any id (decayed)."""
        self._ids = np.zeros(0, np.int64)
        self._est = np.zeros(0, np.float64)

    def update(self, batch: Batch) -> None:
        """Count one step (one id array per device)."""
        ids, counts, _, _ = dedup_step(batch, num_devices=self.num_devices, owner_fn=self.owner_fn)
        self.update_counts(ids, counts)

    def update_counts(self, ids: np.ndarray, counts: np.ndarray) -> None:
        """Count one step given already deduplicated ``(ids, counts)``."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        counts = np.asarray(counts, dtype=np.float64).reshape(-1)
        if ids.shape != counts.shape:
            raise PlannerError("ids and counts differ in length")
        self.steps += 1
        d = self.decay
        self._est = self._est * d
        self.total_weight = self.total_weight * d + float(counts.sum())
        self.error_bound *= d
        merged_ids, merged = _merge_counts(self._ids, self._est, ids, counts)
        merged = merged.astype(np.float64, copy=False)
        k = self.capacity
        if merged.size > k:
            delta = float(np.partition(merged, merged.size - (k + 1))[merged.size - (k + 1)])
            merged = merged - delta
            keep = merged > 0
            merged_ids, merged = merged_ids[keep], merged[keep]
            self.error_bound += delta
        self._ids, self._est = merged_ids, merged

    # ---- queries ----------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ids.size)

    def estimate(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Decayed count estimates (lower bounds) for ``ids`` (0 if not stored)."""
        q = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.zeros(q.size, np.float64)
        if self._ids.size == 0:
            return out
        pos = np.minimum(np.searchsorted(self._ids, q), self._ids.size - 1)
        hit = self._ids[pos] == q
        out[hit] = self._est[pos[hit]]
        return out

    def top(self, hot_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, estimates)`` of the current top-R ids, most frequent first
        (ties by ascending id); fewer if fewer are stored."""
        order = np.lexsort((self._ids, -self._est))[: max(0, int(hot_rows))]
        return self._ids[order].copy(), self._est[order].copy()

    def hot_ids(self, hot_rows: int) -> np.ndarray:
        """The current top-R ids."""
        return self.top(hot_rows)[0]

    def coverage_bounds_of(self, ids: np.ndarray | Sequence[int]) -> tuple[float, float]:
        """``(low, high)`` bounds on the decayed share of exchanged lookups
        that the hot set ``ids`` would absorb."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if self.total_weight <= 0:
            return 0.0, 0.0
        est = self.estimate(ids)
        low = float(est.sum()) / self.total_weight
        high = min(1.0, (float(est.sum()) + ids.size * self.error_bound) / self.total_weight)
        return min(low, 1.0), high

    def coverage_of(self, ids: np.ndarray | Sequence[int]) -> float:
        """Estimated (lower-bound) coverage the hot set ``ids`` would have."""
        return self.coverage_bounds_of(ids)[0]

    def coverage(self, hot_rows: int) -> float:
        """Estimated (lower-bound) coverage of the current top-R ids."""
        return self.coverage_of(self.hot_ids(hot_rows))
