"""Communication cost model of two-fold parallelism (numpy only).

Per table and training step (seconds)::

    L(R) = [R > 0] * F_ar + R * C_ar  +  [n(R) > 0] * F_a2a + n(R) * C_a2a
    n(R) = N * (1 - rho(R))

R hot rows are replicated on every device (their gradients all-reduced each
step), the other ids are owned by ``hash(id) mod W`` and fetched through an
all-to-all.  N = remote lookups per device per step after per-device dedup,
rho(R) = share of them the top-R ids absorb.  F_* are fixed (latency) terms
of one collective call; the HypeReca paper's model is the same without them.

With ``hot_exchange="touched"`` (what the collection's step does,
``jax_hypereca.hot_exchange``) the all-reduce carries a touch count per hot
row and then only the rows some device touched, so the r-th hot row costs
``C_ar * min(1 + m, m + k * u_r)`` instead of ``C_ar``: m = 4 bytes / row
bytes (the count), u_r = 1 - (1 - p_r)^W the chance any of the W devices
touches it in a step (p_r its per-device share of steps, from the counts),
k = 1.44 the mean overshoot of the compact buffer's power-of-two ladder.
Rows rarely touched become cheap to replicate, so the planner affords a
larger R. The positive marginal gains stay a prefix in rank order and
non-increasing (the gain is convex in p_r and negative at p_r = 0), which
is what the allocation below relies on.

This module holds

* the derivation of C_ar and C_a2a for the paper's cluster from the raw
  figures in :mod:`.constants` (:func:`hierarchical_ring_allreduce`,
  :func:`two_level_alltoall`, :func:`paper_profile`);
* the per-row costs of a profile (:func:`c_ar_row`, :func:`c_a2a_lookup`,
  :func:`lookup_bytes`) and :func:`fit_profile`, a profile fitted from
  measured timings (the fit itself is in :mod:`.fit`);
* :class:`TableCostModel`, L(R) and the exact byte counts for one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import constants as K
from .errors import PlannerError
from .stats import coverage, covered_lookups, prefix_sums
from .types import CostProfile, Measurement, TableStats

# ==========================================================================
# Per-row costs of a profile.
# ==========================================================================


def lookup_bytes(profile: CostProfile, dim: int, value_bytes: int = 4) -> int:
    """Bytes one remote lookup moves: key + forward row + backward gradient."""
    return profile.key_bytes + 2 * (int(dim) * int(value_bytes))


def c_ar_row(profile: CostProfile, dim: int, value_bytes: int = 4) -> float:
    """C_ar: seconds per replicated row per step."""
    return profile.c_ar_per_byte * (int(dim) * int(value_bytes))


def c_a2a_lookup(profile: CostProfile, dim: int, value_bytes: int = 4) -> float:
    """C_a2a: seconds per remote lookup per step."""
    return profile.c_a2a_per_byte * lookup_bytes(profile, dim, value_bytes)


# ==========================================================================
# Analytic collectives.
# ==========================================================================


@dataclass(frozen=True, kw_only=True)
class CollectiveModel:
    """Linear model of one collective: ``seconds = fixed_s + seconds_per_byte * payload``."""

    seconds_per_byte: float
    """Seconds per payload byte (payload: all-reduce buffer per device, or
    bytes one device sends in an all-to-all)."""

    bytes_sent_per_payload_byte: float
    """Bytes one device puts on its links per payload byte."""

    messages: int
    """Sequential messages per call (each costs the per-message latency)."""

    fixed_s: float
    """``messages * latency_s``."""

    steps: tuple[tuple[str, float, float], ...]
    """Derivation: (phase, bytes per payload byte, seconds per payload byte)."""


def hierarchical_ring_allreduce(
    *,
    gpus_per_node: int,
    num_nodes: int,
    intra_node_bytes_per_s: float,
    inter_node_bytes_per_s: float,
    latency_s: float,
) -> CollectiveModel:
    """Hierarchical ring all-reduce of a payload of S bytes per GPU.

    g = gpus_per_node, n = num_nodes; the three phases run one after the
    other, so their times add:

    1. reduce-scatter inside the node, ring of g over the intra-node link:
       each GPU sends (g-1) chunks of S/g -> (g-1)/g * S bytes at the
       GPU's intra-node bandwidth.  Afterwards each GPU holds S/g reduced
       over its node.
    2. all-reduce of those S/g shards across the n nodes, one ring of n per
       local rank (g rings at once): each GPU sends 2 (n-1)/n * S/g bytes.
       The g GPUs of a node share the node's NIC, so each gets
       ``inter_node_bytes_per_s / g``.  (Equivalently: the node sends
       2 (n-1)/n * S over its NIC.)
    3. all-gather inside the node, ring of g: (g-1)/g * S bytes again.

    Messages: (g-1) + 2 (n-1) + (g-1) ring steps.
    """
    g, n = int(gpus_per_node), int(num_nodes)
    if g < 1 or n < 1:
        raise PlannerError("gpus_per_node and num_nodes must be >= 1")
    per_gpu_nic = inter_node_bytes_per_s / g
    rs = (g - 1) / g                      # bytes per payload byte, phase 1
    ar = 2.0 * (n - 1) / n / g            # phase 2
    ag = (g - 1) / g                      # phase 3
    steps = (
        ("reduce-scatter in node (intra-node link)", rs, rs / intra_node_bytes_per_s),
        ("ring all-reduce across nodes (per-GPU NIC share)", ar, ar / per_gpu_nic),
        ("all-gather in node (intra-node link)", ag, ag / intra_node_bytes_per_s),
    )
    messages = (g - 1) + 2 * (n - 1) + (g - 1)
    return CollectiveModel(
        seconds_per_byte=sum(s[2] for s in steps),
        bytes_sent_per_payload_byte=rs + ar + ag,
        messages=messages,
        fixed_s=messages * latency_s,
        steps=steps,
    )


def two_level_alltoall(
    *,
    gpus_per_node: int,
    num_nodes: int,
    intra_node_bytes_per_s: float,
    inter_node_bytes_per_s: float,
    latency_s: float,
    calls_per_step: int = K.ALL_TO_ALL_CALLS_PER_STEP,
) -> CollectiveModel:
    """All-to-all exchange of remote lookups on g x n GPUs, per payload byte.

    Owners are ``hash(id) mod W``, so a remote lookup goes to each of the
    W-1 peers with equal probability: a share (W-g)/(W-1) crosses nodes
    (through the GPU's 1/g share of the node's NIC, since all g GPUs send at
    once), the rest (g-1)/(W-1) stays in the node (intra-node link).  The
    two parts are charged one after the other (no overlap).  The payload is
    what one device sends per step: per lookup the key (forward), the row
    (forward, sent back by the owner; symmetric traffic makes it the same
    volume per device) and the gradient (backward).

    Messages: ``calls_per_step`` all-to-alls of W-1 pairwise rounds each.
    """
    g, n = int(gpus_per_node), int(num_nodes)
    w = g * n
    if w <= 1:
        return CollectiveModel(seconds_per_byte=0.0, bytes_sent_per_payload_byte=0.0,
                               messages=0, fixed_s=0.0, steps=())
    cross = (w - g) / (w - 1)
    local = (g - 1) / (w - 1)
    per_gpu_nic = inter_node_bytes_per_s / g
    steps = (
        ("to peers in other nodes (per-GPU NIC share)", cross, cross / per_gpu_nic),
        ("to peers in the same node (intra-node link)", local, local / intra_node_bytes_per_s),
    )
    messages = int(calls_per_step) * (w - 1)
    return CollectiveModel(
        seconds_per_byte=sum(s[2] for s in steps),
        bytes_sent_per_payload_byte=1.0,
        messages=messages,
        fixed_s=messages * latency_s,
        steps=steps,
    )


def paper_collectives() -> tuple[CollectiveModel, CollectiveModel]:
    """(all-reduce, all-to-all) models of the paper's 4 x 8 GPU cluster."""
    return cluster_collectives(
        gpus_per_node=K.PAPER_GPUS_PER_NODE,
        num_nodes=K.PAPER_NUM_NODES,
        intra_node_bytes_per_s=K.PAPER_PCIE_BYTES_PER_S,
        inter_node_bytes_per_s=K.PAPER_INFINIBAND_BYTES_PER_S,
        latency_s=K.PAPER_MESSAGE_LATENCY_S,
    )


def cluster_collectives(**links: float) -> tuple[CollectiveModel, CollectiveModel]:
    """(all-reduce, all-to-all) models of a g x n GPU cluster: the keywords
    of :func:`hierarchical_ring_allreduce` (gpus_per_node, num_nodes,
    intra_node_bytes_per_s, inter_node_bytes_per_s (per node), latency_s)."""
    return hierarchical_ring_allreduce(**links), two_level_alltoall(**links)


def cluster_profile(*, name: str, source: str, **links: float) -> CostProfile:
    """CostProfile of a g x n GPU cluster from its link figures (the keywords
    of :func:`cluster_collectives`), e.g. to plan for a cluster other than
    the paper's: an H100 node's NVLink and its NICs."""
    ar, a2a = cluster_collectives(**links)
    g, n = int(links["gpus_per_node"]), int(links["num_nodes"])
    return CostProfile(
        name=name,
        num_devices=g * n,
        devices_per_node=g,
        c_ar_per_byte=ar.seconds_per_byte,
        c_a2a_per_byte=a2a.seconds_per_byte,
        latency_s=float(links["latency_s"]),
        ar_fixed_s=ar.fixed_s,
        a2a_fixed_s=a2a.fixed_s,
        ar_bytes_sent_per_payload_byte=ar.bytes_sent_per_payload_byte,
        ar_algorithm="hierarchical_ring",
        key_bytes=K.KEY_BYTES,
        source=source,
    )


def paper_profile() -> CostProfile:
    """CostProfile of the HypeReca paper's cluster, from published figures only.

    32 GPUs = 4 nodes x 8; 100 Gb/s InfiniBand per node (12.5 GB/s), PCIe 3.0
    x16 at 12 GB/s per GPU, 10 us per message.  With dim 128 fp32 (512-byte
    rows, 1032 bytes per lookup) this gives C_ar ~= 1.361e-7 s per row and
    C_a2a ~= 5.308e-7 s per lookup; :func:`paper_derivation` lists every
    step.
    """
    return cluster_profile(
        name="paper-hypereca-4x8-ib100-pcie3",
        gpus_per_node=K.PAPER_GPUS_PER_NODE,
        num_nodes=K.PAPER_NUM_NODES,
        intra_node_bytes_per_s=K.PAPER_PCIE_BYTES_PER_S,
        inter_node_bytes_per_s=K.PAPER_INFINIBAND_BYTES_PER_S,
        latency_s=K.PAPER_MESSAGE_LATENCY_S,
        source=(
            "HypeReca (USENIX ATC '25) testbed figures: 4 nodes x 8 GPUs, 100 Gb/s "
            "InfiniBand per node, PCIe 3.0 x16 ~12 GB/s per GPU, 10 us per message; "
            "analytic hierarchical-ring all-reduce and two-level all-to-all"
        ),
    )


def paper_derivation(dim: int = K.PAPER_EMBEDDING_DIM, value_bytes: int = K.PAPER_VALUE_BYTES) -> str:
    """Human-readable derivation of the paper profile's C_ar and C_a2a."""
    ar, a2a = paper_collectives()
    p = paper_profile()
    lines = [f"row = {dim} x {value_bytes} B = {dim * value_bytes} B; "
             f"lookup = key {p.key_bytes} B + row + gradient = {lookup_bytes(p, dim, value_bytes)} B"]
    lines.append("all-reduce (hierarchical ring), per payload byte:")
    for name, b, s in ar.steps:
        lines.append(f"  {name}: {b:.6g} B -> {s:.6g} s")
    lines.append(f"  total {ar.seconds_per_byte:.6g} s/B -> C_ar = {c_ar_row(p, dim, value_bytes):.6g} s/row; "
                 f"fixed {ar.messages} msgs = {ar.fixed_s * 1e6:.0f} us")
    lines.append("all-to-all (two-level), per payload byte:")
    for name, b, s in a2a.steps:
        lines.append(f"  {name}: share {b:.6g} -> {s:.6g} s")
    lines.append(f"  total {a2a.seconds_per_byte:.6g} s/B -> C_a2a = {c_a2a_lookup(p, dim, value_bytes):.6g} s/lookup; "
                 f"fixed {a2a.messages} msgs = {a2a.fixed_s * 1e6:.0f} us")
    return "\n".join(lines)


# ==========================================================================
# Fitting measured timings.
# ==========================================================================


def fit_profile(measurements: Sequence[Measurement], **options: Any) -> CostProfile:
    """Fit a :class:`CostProfile` from measured collectives.

    For each kind separately, ``seconds = fixed + per_byte * bytes`` by
    least squares (:func:`.fit.fit_line`): the all-reduce fit gives
    ``c_ar_per_byte`` and ``ar_fixed_s``, the all-to-all fit
    ``c_a2a_per_byte`` and ``a2a_fixed_s``.  All measurements must share
    one ``num_devices``.  ``ar_bytes_sent_per_payload_byte`` defaults to the
    flat ring's 2 (W-1)/W.  With ``min_r2`` a poorer fit raises.  The same
    as ``CostProfile.from_measurements``.
    """
    return CostProfile.from_measurements(measurements, **options)


# ==========================================================================
# Per-table model.
# ==========================================================================


class TableCostModel:
    """L(R), byte counts and memory of one table under one profile.

    All methods are vectorised over R (ints or integer arrays, clipped to
    the number of distinct ids).  Exchange volumes are exact integer prefix
    sums of the counts when ``stats.remote_only``; otherwise they are scaled
    by the expected remote share (W-1)/W.
    """

    def __init__(
        self,
        stats: TableStats,
        profile: CostProfile,
        *,
        value_bytes: int = 4,
        optimizer_state_floats_per_row: int = 0,
        optimizer_state_bytes_per_float: int = K.OPTIMIZER_STATE_BYTES_PER_FLOAT,
        index_overhead_bytes: int = K.HOT_INDEX_OVERHEAD_BYTES,
        hot_exchange: str = "dense",
    ) -> None:
        if hot_exchange not in ("dense", "touched"):
            raise PlannerError(f"hot_exchange must be 'dense' or 'touched', got {hot_exchange!r}")
        if value_bytes < 1:
            raise PlannerError(f"value_bytes must be >= 1, got {value_bytes}")
        if optimizer_state_floats_per_row < 0 or optimizer_state_bytes_per_float < 0 or index_overhead_bytes < 0:
            raise PlannerError("optimizer state and index overhead sizes must be >= 0")
        self.stats = stats
        self.profile = profile
        self.value_bytes = int(value_bytes)
        w = stats.num_devices
        self.remote_scale = 1.0 if stats.remote_only else (w - 1) / w
        self.steps_x_devices = stats.num_batches * stats.num_devices
        self.c_ar = c_ar_row(profile, stats.dim, value_bytes)
        self.c_a2a = c_a2a_lookup(profile, stats.dim, value_bytes)
        self.row_bytes = stats.dim * self.value_bytes
        self.lookup_bytes = lookup_bytes(profile, stats.dim, value_bytes)
        self.bytes_per_hot_row = int(
            self.row_bytes
            + int(optimizer_state_floats_per_row) * int(optimizer_state_bytes_per_float)
            + K.KEY_BYTES
            + int(index_overhead_bytes)
        )
        self.num_ids = stats.num_ids
        self.prefix = prefix_sums(stats.counts)
        """``prefix[R]``: sampled lookups the top-R ids absorb."""
        self.exchanged_lookups = int(self.prefix[-1])
        """Deduplicated (remote) lookups in the sample."""
        self.hot_exchange = hot_exchange
        self.ar_rows = self._ar_rows(hot_exchange)
        """``ar_rows[R]``: rows' worth of bytes the top-R ids' all-reduce carries."""

    def _ar_rows(self, hot_exchange: str) -> np.ndarray:
        if hot_exchange == "dense":
            return np.arange(self.num_ids + 1, dtype=np.int64)
        w = self.stats.num_devices
        counted = max(1, w - 1) if self.stats.remote_only else w  # devices each count covers
        p = np.minimum(1.0, self.stats.counts / (self.stats.num_batches * counted))
        union = 1.0 - (1.0 - p) ** w
        m = K.HOT_COUNT_BYTES / self.row_bytes
        per_row = np.minimum(1.0 + m, m + K.HOT_LADDER_OVERSHOOT * union)
        return np.concatenate(([0.0], np.cumsum(per_row)))

    # ---- exchange volume ---------------------------------------------------

    def remote_lookups_sampled(self, r: int | np.ndarray) -> np.ndarray:
        """Remote lookups left over the whole sample (float; exact integers
        for remote-only stats)."""
        left = self.exchanged_lookups - np.asarray(covered_lookups(self.stats, r, prefix=self.prefix))
        return left * self.remote_scale

    def remote_lookups_per_step(self, r: int | np.ndarray) -> np.ndarray:
        """n(R) = N (1 - rho(R)) per device per step."""
        return self.remote_lookups_sampled(r) / self.steps_x_devices

    @property
    def lookups_per_step(self) -> float:
        """N: remote lookups per device per step with nothing replicated."""
        return float(self.remote_lookups_per_step(0))

    # ---- time ----------------------------------------------------------------

    def allreduce_seconds(self, r: int | np.ndarray) -> np.ndarray:
        r = np.minimum(np.asarray(r), self.num_ids)
        return np.where(r > 0, self.profile.ar_fixed_s, 0.0) + self.ar_rows[r] * self.c_ar

    def alltoall_seconds(self, r: int | np.ndarray) -> np.ndarray:
        n = self.remote_lookups_per_step(r)
        return np.where(n > 0, self.profile.a2a_fixed_s, 0.0) + n * self.c_a2a

    def latency(self, r: int | np.ndarray) -> np.ndarray:
        """L(R) in seconds per step."""
        return self.allreduce_seconds(r) + self.alltoall_seconds(r)

    @property
    def positive_gain_rows(self) -> int:
        """Number of leading rows whose marginal gain is > 0 (cached)."""
        n = getattr(self, "_positive_gain_rows", None)
        if n is None:
            n = int(np.count_nonzero(self.marginal_gain(1, self.num_ids) > 0))
            self._positive_gain_rows = n
        return n

    def marginal_gain(self, first: int, last: int) -> np.ndarray:
        """Seconds saved per step by the r-th hot row, for r = first..last
        (1-based), without fixed terms: count_r * C_a2a / (steps*W) minus the
        row's all-reduce cost (C_ar, or less when touched rows only, module
        docstring). The positive ones come first and are non-increasing."""
        c = self.stats.counts[first - 1 : last].astype(np.float64)
        cost = np.diff(self.ar_rows[first - 1 : last + 1]) * self.c_ar
        return c * self.remote_scale / self.steps_x_devices * self.c_a2a - cost

    # ---- bytes -----------------------------------------------------------------

    def allreduce_payload_bytes(self, r: int | np.ndarray) -> np.ndarray:
        return self.ar_rows[np.minimum(np.asarray(r), self.num_ids)] * self.row_bytes

    def allreduce_bytes_sent(self, r: int | np.ndarray) -> np.ndarray:
        return self.allreduce_payload_bytes(r) * self.profile.ar_bytes_sent_per_payload_byte

    def alltoall_bytes_per_step(self, r: int | np.ndarray) -> np.ndarray:
        return self.remote_lookups_per_step(r) * self.lookup_bytes

    def memory_bytes(self, r: int | np.ndarray) -> np.ndarray:
        return np.minimum(np.asarray(r), self.num_ids) * self.bytes_per_hot_row

    # ---- coverage --------------------------------------------------------------

    def coverage(self, r: int | np.ndarray) -> np.ndarray | float:
        """rho(R): share of the exchanged lookups the top-R ids absorb."""
        return coverage(self.stats.counts, r, prefix=self.prefix)

    def rows_for_coverage(self, target: float) -> int:
        """Smallest R with rho(R) >= target (0 if nothing is exchanged)."""
        if self.exchanged_lookups == 0 or target <= 0:
            return 0
        rho = self.coverage(np.arange(self.num_ids + 1))
        hit = np.flatnonzero(rho >= target)
        return int(hit[0]) if hit.size else self.num_ids


def check_profile_matches(stats: TableStats, profile: CostProfile) -> None:
    """Raise if the stats were sampled on a different device count."""
    if stats.num_devices != profile.num_devices:
        raise PlannerError(
            f"stats for table '{stats.name}' were sampled on {stats.num_devices} devices "
            f"but profile '{profile.name}' models {profile.num_devices}; re-collect the "
            f"stats on the live mesh or use a profile for {stats.num_devices} devices"
        )

