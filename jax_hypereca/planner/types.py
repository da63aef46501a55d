"""Contracts of the replication planner (plain numpy + dataclasses, no jax).

Every record is a keyword-only frozen dataclass.  Records holding numpy
arrays (:class:`TableStats`, :class:`TablePlan`) compare by identity
(``eq=False``); their arrays are copied and made read-only on construction.

Records only: fields, the invariants checked on construction, accessors
that read fields without computing, plain dict / JSON forms, and two
one-line constructors from raw inputs (``TableStats.from_counts``,
``CostProfile.from_measurements``) that call modules *below* this one
(:mod:`.ranking`, :mod:`.fit`).  What is computed from the records lives
above: coverage and lookup totals in :mod:`.stats`, costs and bytes in
:mod:`.cost_model`, text in :mod:`.report`.  Nothing here imports them.

Units everywhere: bytes, seconds, "per step" = one training step, "per
device" = one of the W devices of the mesh.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from .constants import KEY_BYTES
from .errors import PlannerError
from .fit import fitted_profile_fields
from .ranking import ranked_stats_fields

__all__ = ["CostProfile", "Measurement", "MeasurementKind", "PlannerError", "ReplicationPlan",
           "TablePlan", "TableStats"]


def _readonly(a: Any, dtype: Any) -> np.ndarray:
    arr = np.array(a, dtype=dtype, copy=True).reshape(-1)
    arr.setflags(write=False)
    return arr


# ==========================================================================
# Frequency statistics.
# ==========================================================================


@dataclass(frozen=True, kw_only=True, eq=False)
class TableStats:
    """Exact id frequencies of one table over a sample of training batches.

    The counts are of ids *as they appear in the exchange*: within one batch
    each device counts an id at most once (per-device dedup), and, when the
    counter had an owner function, only ids owned by another device.  Build
    it with :func:`jax_hypereca.planner.stats.collect_table_stats` or, for
    synthetic data, :meth:`from_counts`.
    """

    name: str
    """Table name; unique within one planning request."""

    dim: int
    """Embedding dimension (elements per row)."""

    ids: np.ndarray
    """int64 ids, in the order of ``counts`` (most frequent first; ties
    broken by ascending id).  ``ids[:R]`` is the top-R hot set."""

    counts: np.ndarray
    """int64, sorted descending, all > 0: ``counts[i]`` = number of
    (batch, device) pairs whose deduplicated (remote) lookups contain
    ``ids[i]``, summed over the sample."""

    total_lookups: int
    """Raw lookups seen in the sample, summed over batches and devices,
    duplicates included, reserved ids (-1, -2) excluded."""

    deduplicated_lookups: int
    """Lookups after per-device dedup, before the remote-only filter (equal
    to ``counts.sum()`` when ``remote_only`` is False)."""

    num_batches: int
    """Training steps (global batches) in the sample."""

    num_devices: int
    """Devices W the batches were split over; each batch had W shards."""

    remote_only: bool = True
    """True if ``counts`` only include ids owned by another device (exactly
    what the all-to-all carries).  If False, the cost model scales the
    exchange volume by the expected remote share (W-1)/W."""

    def __post_init__(self) -> None:
        ids = _readonly(self.ids, np.int64)
        counts = _readonly(self.counts, np.int64)
        if ids.shape != counts.shape:
            raise PlannerError(
                f"TableStats '{self.name}': ids ({ids.size}) and counts "
                f"({counts.size}) differ in length; pass one count per id"
            )
        if counts.size and (counts.min() <= 0 or np.any(np.diff(counts) > 0)):
            raise PlannerError(
                f"TableStats '{self.name}': counts must be positive and sorted "
                "descending; build it with TableStats.from_counts(...)"
            )
        if ids.size and np.unique(ids).size != ids.size:
            raise PlannerError(
                f"TableStats '{self.name}': ids must be unique, got "
                f"{ids.size - np.unique(ids).size} repeated; sum the counts of each id"
            )
        if int(self.dim) <= 0:
            raise PlannerError(f"TableStats '{self.name}': dim must be >= 1, got {self.dim}")
        if int(self.num_batches) <= 0 or int(self.num_devices) <= 0:
            raise PlannerError(
                f"TableStats '{self.name}': num_batches and num_devices must be >= 1, got "
                f"num_batches={self.num_batches}, num_devices={self.num_devices}"
            )
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "counts", counts)

    # ---- constructors -------------------------------------------------

    @classmethod
    def from_counts(cls, **options: Any) -> "TableStats":
        """Build from unsorted per-id counts (zeros dropped; ranked most
        frequent first, ties by ascending id).  The keyword arguments are
        :func:`.ranking.ranked_stats_fields`' (name, dim, counts, ids,
        num_batches, num_devices, totals, remote_only)."""
        return cls(**ranked_stats_fields(**options))

    # ---- accessors ------------------------------------------------------
    # Computed quantities (exchanged and covered lookups, coverage, hot ids)
    # are functions of jax_hypereca.planner.stats.

    @property
    def num_ids(self) -> int:
        """Distinct ids seen in the (remote) exchange."""
        return int(self.counts.size)


# ==========================================================================
# Measurements and cost profiles.
# ==========================================================================

MeasurementKind = Literal["all_reduce", "all_to_all"]


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One timed collective on the live mesh (filled by the jax benchmarks).

    ``all_reduce``: an all-reduce of ``rows`` rows of ``dim`` elements;
    ``bytes`` = size of the buffer every device contributes.
    ``all_to_all``: an exchange in which every device sends ``rows`` lookups
    to other devices; ``bytes`` = bytes each device sends for them (whatever
    the benchmark moved: e.g. rows x (2*dim*value_bytes + 8) for key, row and
    gradient, or rows x dim*value_bytes for rows only).  The planner fits
    seconds against ``bytes``, so the per-byte cost transfers to any dim.
    """

    kind: MeasurementKind
    """'all_reduce' or 'all_to_all'."""

    rows: int
    """Rows all-reduced, or remote lookups sent per device."""

    dim: int
    """Elements per row."""

    bytes: int
    """Payload bytes per device (see the class docstring)."""

    seconds: float
    """Wall time of one call (median over repeats recommended)."""

    num_devices: int
    """Devices W taking part."""

    dtype: str = "float32"
    """Element dtype name of the rows."""

    repeats: int = 1
    """Timed repetitions behind ``seconds`` (informational)."""

    def __post_init__(self) -> None:
        if self.kind not in ("all_reduce", "all_to_all"):
            raise PlannerError(
                f"Measurement kind must be 'all_reduce' or 'all_to_all', got {self.kind!r}"
            )
        if self.bytes <= 0 or not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise PlannerError(
                f"Measurement needs bytes > 0 and finite seconds > 0, got "
                f"bytes={self.bytes}, seconds={self.seconds}"
            )
        if self.num_devices < 1 or self.rows < 0 or self.dim < 1:
            raise PlannerError("Measurement needs num_devices >= 1, rows >= 0, dim >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        return cls(**dict(d))


@dataclass(frozen=True, kw_only=True)
class CostProfile:
    """Per-byte communication costs of one mesh.

    Model per table and step (seconds)::

        t_allreduce(R) = [R > 0] * ar_fixed_s  + R * c_ar_row(dim, vb)
        t_alltoall(n)  = [n > 0] * a2a_fixed_s + n * c_a2a_lookup(dim, vb)
        c_ar_row       = c_ar_per_byte  * dim * vb
        c_a2a_lookup   = c_a2a_per_byte * (2 * dim * vb + key_bytes)

    with R hot rows, n remote lookups per device (after dedup), vb bytes per
    element.  Use :func:`jax_hypereca.planner.paper_profile` for the paper's
    cluster or :meth:`from_measurements` for a measured mesh; the per-row
    costs are :func:`jax_hypereca.planner.c_ar_row` and
    :func:`jax_hypereca.planner.c_a2a_lookup`.
    """

    name: str
    """Short identifier, e.g. 'paper-4x8-ib100'."""

    num_devices: int
    """Devices W the profile describes."""

    c_ar_per_byte: float
    """Seconds per byte of all-reduced payload (the buffer each device
    contributes), fixed part excluded."""

    c_a2a_per_byte: float
    """Seconds per byte of remote-lookup traffic one device sends in one
    step's exchange, fixed part excluded."""

    latency_s: float
    """Fixed cost of one message (seconds); informational for measured
    profiles (the fitted fixed terms below already include it)."""

    ar_fixed_s: float
    """Fixed seconds of one table's hot-row all-reduce per step (paid when
    R > 0)."""

    a2a_fixed_s: float
    """Fixed seconds of one table's exchange per step (paid while any
    lookup stays remote)."""

    ar_bytes_sent_per_payload_byte: float
    """Bytes one device sends per byte of all-reduce payload under the
    profile's algorithm (ring over W: 2(W-1)/W)."""

    source: str
    """Where the numbers come from (paper figures, or mesh + date of the
    benchmark)."""

    devices_per_node: int | None = None
    """Devices sharing one node / fast domain, if known."""

    ar_algorithm: str = "ring"
    """All-reduce algorithm the byte counts assume."""

    key_bytes: int = KEY_BYTES
    """Bytes per id on the wire."""

    r2_all_reduce: float | None = None
    """Coefficient of determination of the all-reduce fit (None: analytic)."""

    r2_all_to_all: float | None = None
    """Coefficient of determination of the all-to-all fit (None: analytic)."""

    def __post_init__(self) -> None:
        for f in ("c_ar_per_byte", "c_a2a_per_byte", "latency_s", "ar_fixed_s",
                  "a2a_fixed_s", "ar_bytes_sent_per_payload_byte"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v >= 0):
                raise PlannerError(f"CostProfile '{self.name}': {f} must be finite and >= 0, got {v}")
        if self.num_devices < 1:
            raise PlannerError(f"CostProfile '{self.name}': num_devices must be >= 1")

    # ---- construction / serialisation ----------------------------------

    @classmethod
    def from_measurements(cls, measurements: Sequence[Measurement], **options: Any
                          ) -> "CostProfile":
        """Fit ``seconds = fixed + per_byte * bytes`` by least squares,
        separately for the all-reduce and the all-to-all timings; r^2 of
        each fit is stored on the profile.  Needs >= 2 distinct sizes per
        kind, all on the same number of devices; with ``min_r2`` a poorer
        fit raises :class:`PlannerError`.  The keyword arguments are
        :func:`.fit.fitted_profile_fields`' (name, source, devices_per_node,
        ar_algorithm, ar_bytes_sent_per_payload_byte, latency_s, key_bytes,
        min_r2)."""
        return cls(**fitted_profile_fields(measurements, **options))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CostProfile":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CostProfile":
        return cls.from_dict(json.loads(text))


# ==========================================================================
# Plans.
# ==========================================================================


@dataclass(frozen=True, kw_only=True, eq=False)
class TablePlan:
    """The replication decision for one table and its predicted cost.

    Per-step quantities are means per device per step over the sampled
    batches; ``*_sampled`` quantities are exact integer totals over the
    whole sample (all batches, all devices) for comparison with measured
    traffic on the same batches.
    """

    name: str
    """Table name."""

    dim: int
    """Embedding dimension."""

    hot_rows: int
    """R: rows replicated on every device."""

    hot_ids: np.ndarray
    """int64, the top-R ids (most frequent first)."""

    coverage: float
    """rho(R): share of the exchanged lookups the hot set absorbs."""

    bytes_per_hot_row: int
    """Memory of one replicated row on one device: value + optimizer state
    + key + index overhead."""

    memory_bytes_per_device: int
    """``hot_rows * bytes_per_hot_row``."""

    max_hot_rows: int
    """Largest R the search was allowed (budget allocation, max_hot_rows,
    distinct ids)."""

    remote_lookups_per_step: float
    """N * (1 - rho(R)): lookups one device still sends per step."""

    remote_lookups_per_step_unreplicated: float
    """N: the same with R = 0."""

    remote_lookups_sampled: int
    """Exact remote lookups left over the whole sample (sum of counts of
    non-hot ids; scaled by (W-1)/W and rounded if the stats are not
    remote-only)."""

    allreduce_payload_bytes: int
    """Bytes each device contributes to the hot-row gradient all-reduce per
    step: R * dim * value_bytes."""

    allreduce_bytes_sent_per_device: float
    """Bytes each device sends for that all-reduce under the profile's
    algorithm."""

    alltoall_bytes_per_lookup: int
    """Key + row + gradient bytes per remote lookup."""

    alltoall_bytes_per_step: float
    """Bytes one device sends per step in the exchange:
    ``remote_lookups_per_step * alltoall_bytes_per_lookup``."""

    alltoall_bytes_sampled: int
    """``remote_lookups_sampled * alltoall_bytes_per_lookup``: all devices,
    all sampled batches."""

    predicted_allreduce_s: float
    """Predicted seconds per step of the hot-row all-reduce."""

    predicted_alltoall_s: float
    """Predicted seconds per step of the exchange."""

    predicted_step_s: float
    """L(R) = all-reduce + exchange seconds per step."""

    unreplicated_step_s: float
    """L(0), for comparison."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hot_ids", _readonly(self.hot_ids, np.int64))

    def to_dict(self, *, include_hot_ids: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "hot_ids":
                if not include_hot_ids:
                    continue
                v = [int(x) for x in v]
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TablePlan":
        d = dict(d)
        d.setdefault("hot_ids", [])
        return cls(**d)


@dataclass(frozen=True, kw_only=True, eq=False)
class ReplicationPlan:
    """Hot-set sizes for all tables sharing one per-device memory budget.

    ``plan["name"]`` is one table's :class:`TablePlan`;
    :func:`jax_hypereca.planner.plan_summary` prints the plan as a table."""

    tables: tuple[TablePlan, ...]
    """One plan per table, in the order of the input stats."""

    profile_name: str
    """Name of the :class:`CostProfile` used."""

    memory_budget_bytes: int
    """Per-device bytes available to the replicas of all tables."""

    memory_used_bytes: int
    """Per-device bytes the replicas use (sum over tables)."""

    value_bytes: int
    """Bytes per embedding element."""

    optimizer_state_floats_per_row: int | dict[str, int]
    """Optimizer-state elements stored per replicated row (one value for
    all tables, or per table name)."""

    predicted_step_s: float
    """Sum over tables of L(R) (collectives assumed not to overlap)."""

    unreplicated_step_s: float
    """Sum over tables of L(0)."""

    method: str
    """How R was chosen (for the record)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))

    def __getitem__(self, name: str) -> TablePlan:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def hot_rows(self) -> dict[str, int]:
        """R per table name."""
        return {t.name: t.hot_rows for t in self.tables}

    def to_dict(self, *, include_hot_ids: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "tables":
                d["tables"] = [t.to_dict(include_hot_ids=include_hot_ids) for t in self.tables]
            else:
                d[f.name] = getattr(self, f.name)
        return d

    def to_json(self, *, indent: int | None = 2, include_hot_ids: bool = True) -> str:
        return json.dumps(self.to_dict(include_hot_ids=include_hot_ids), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ReplicationPlan":
        d = dict(d)
        d["tables"] = tuple(TablePlan.from_dict(t) for t in d["tables"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ReplicationPlan":
        return cls.from_dict(json.loads(text))
