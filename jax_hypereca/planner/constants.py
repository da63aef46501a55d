"""Raw constants of the replication planner, each with its unit and source.

Nothing here is tuned.  The paper figures are the testbed description of
HypeReca (USENIX ATC '25) as quoted in this project's design brief; the
derived per-row costs are computed from them, step by step, in
:mod:`jax_hypereca.planner.cost_model` (see ``paper_profile``), never written
down here as finished numbers.

Units: bytes are bytes (not bits), bandwidths are bytes per second, times are
seconds.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# Reserved ids and sampling defaults (project conventions).
# --------------------------------------------------------------------------

PADDING_ID: int = -1
"""Id used to pad ragged batches; never looked up, never counted."""

RESERVED_IDS: tuple[int, ...] = (-1, -2)
"""Ids the counters ignore: -1 (padding id, also the store's empty-slot key)
and -2 (the store's erased-slot key); they match ``jax_hypereca.errors``
(PADDING_ID / EMPTY_KEY, ERASED_KEY) but are restated here so the planner
imports nothing outside itself.  Other negative ids are ordinary ids."""

DEFAULT_PEEK_BATCHES: int = 100
"""Batches sampled before training to count id frequencies (the paper's
"peek" at the data before choosing the hot set)."""

KEY_BYTES: int = 8
"""Bytes of one id on the wire and in the hot-row index (int64)."""

OPTIMIZER_STATE_BYTES_PER_FLOAT: int = 4
"""Bytes of one optimizer-state element (fp32 accumulators)."""

HOT_INDEX_OVERHEAD_BYTES: int = 8
"""Per-row bytes of the hot-id lookup structure on top of the stored key:
one int32 slot position plus 4 bytes of open-addressing head-room (a hash
table kept at most half full stores 2 slots of 4 bytes per row).  Project
assumption, not a paper figure; pass ``index_overhead_bytes`` to override."""

HOT_COUNT_BYTES: int = 4
"""Bytes of the touch count all-reduced per hot row (hot_exchange="touched")."""

HOT_LADDER_OVERSHOOT: float = 1.44
"""Mean compact buffer size over the union it holds, for a ladder of powers
of two: (2 - 1) / ln 2 (hot_exchange="touched")."""

# --------------------------------------------------------------------------
# The paper's cluster (HypeReca, USENIX ATC '25, evaluation testbed).
# --------------------------------------------------------------------------

PAPER_NUM_NODES: int = 4
"""Nodes in the testbed."""

PAPER_GPUS_PER_NODE: int = 8
"""GPUs per node."""

PAPER_NUM_GPUS: int = PAPER_NUM_NODES * PAPER_GPUS_PER_NODE
"""W = 32 GPUs in total."""

PAPER_INFINIBAND_BITS_PER_S: float = 100e9
"""100 Gb/s InfiniBand NIC per node, shared by the node's 8 GPUs for all
traffic that leaves the node."""

PAPER_INFINIBAND_BYTES_PER_S: float = PAPER_INFINIBAND_BITS_PER_S / 8.0
"""The same link in bytes: 12.5 GB/s per node (per direction)."""

PAPER_PCIE_BYTES_PER_S: float = 12e9
"""PCIe 3.0 x16, about 12 GB/s per GPU (per direction); carries traffic
between GPUs of the same node."""

PAPER_MESSAGE_LATENCY_S: float = 10e-6
"""Fixed cost of one message (10 microseconds)."""

PAPER_BATCH_PER_GPU: int = 16_384
"""Samples per GPU per step."""

PAPER_EMBEDDING_DIM: int = 128
"""Embedding dimension of the evaluated tables."""

PAPER_VALUE_BYTES: int = 4
"""fp32 embedding values and gradients."""

PAPER_HOT_ID_SHARE: float = 0.022
"""Reported skew: about 2.2 % of the ids ..."""

PAPER_HOT_COVERAGE: float = 0.90
"""... cover more than 90 % of the accesses."""

PAPER_MODEL_MIN_R2: float = 0.9
"""The paper's L(R) model fits its measurements with r^2 above this."""

# --------------------------------------------------------------------------
# Exchange protocol assumptions (project modelling choices).
# --------------------------------------------------------------------------

ALL_TO_ALL_CALLS_PER_STEP: int = 3
"""All-to-all collectives one table's exchange needs per training step:
ids to owners (forward), rows back to requesters (forward), gradients to
owners (backward).  Owners remember the ids they served, so the backward
pass sends no keys.  Only the fixed (latency) term uses this count."""

PROFILE_CACHE_SCHEMA: int = 1
"""Version stamped into cached profile JSON files; others are ignored."""
