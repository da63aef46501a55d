"""Model configurations and presets: the network (ModelConfig), the sparse
side (vocabulary sizes, multi-hot sizes) and how they become jax_hypereca
TableSpecs and FeatureSpecs with capacities bounded to a memory budget.

Presets:

``small``          the default of ``python -m models.train``: a small DLRM for
                   the synthetic Criteo-like stream (spec v1), sized so a
                   2-core machine trains it to its AUC target in minutes.
``tiny``           the small model on the stream's first 4 sparse features only: quick
                   to compile, for smoke tests.
``criteo-kaggle``  the reference DLRM for Criteo Kaggle (facebookresearch/dlrm
                   ``--arch-sparse-feature-size=16 --arch-mlp-bot=13-512-256-64-16
                   --arch-mlp-top=512-256-1``).
``mlperf-dlrmv2``  MLPerf DLRMv2 (TorchRec's DLRM_DCN): dim 128, bottom
                   512-256-128, three low-rank (512) cross layers, top
                   1024-1024-512-256-1, multi-hot Criteo Terabyte.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

from jax_hypereca import FeatureSpec, Optimizer, TableSpec
from jax_hypereca.data import CRITEO_KAGGLE_VOCAB, NUM_SPARSE, default_vocab_sizes

# facebookresearch/dlrm torchrec_dlrm/README.MD @090956ee2319ddd349a42232958aefccfe3f7b0a and
# pytorch/torchrec torchrec/datasets/scripts/nvt/utils/criteo_constant.py
# NUM_EMBEDDINGS_PER_FEATURE @a48cef79ebc333da92af1311c04b041ee21a8e75: the table sizes of
# MLPerf DLRM v1/v2 on Criteo Terabyte (capped at 40M rows).
MLPERF_TABLE_SIZES = (
    40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10,
    2209, 11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36,
)
# facebookresearch/dlrm torchrec_dlrm/scripts/materialize_synthetic_multihot_dataset.py and
# README.MD @090956ee2319ddd349a42232958aefccfe3f7b0a: ids per sample per table of the
# multi-hot Criteo that MLPerf DLRMv2 trains on.
MLPERF_MULTI_HOT_SIZES = (
    3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1,
)

SPARSE_NAMES = tuple(f"C{i}" for i in range(1, NUM_SPARSE + 1))
# Headroom of a table over its vocabulary (hash buckets fill unevenly), and
# the smallest table (whole buckets on every shard of a large mesh).
CAPACITY_HEADROOM = 2
MIN_CAPACITY = 4096


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The network of a DLRM-style model."""

    interaction: Literal["dot", "dcn"] = "dot"
    """"dot": DLRM's pairwise dot products; "dcn": DCN-v2 cross network."""
    embedding_dim: int = 16
    """Width of every embedding (and of the bottom MLP's output for "dot")."""
    bottom_mlp: tuple[int, ...] = (64, 16)
    """Bottom MLP sizes; for "dot" the last must equal embedding_dim."""
    top_mlp: tuple[int, ...] = (128, 64)
    """Top MLP hidden sizes (a final 1-wide layer gives the logit)."""
    cross_layers: int = 3
    """Cross layers of the "dcn" interaction."""
    cross_low_rank: int = 512
    """Rank of each cross layer's matrix (0: full rank)."""

    def __post_init__(self):
        object.__setattr__(self, "bottom_mlp", tuple(int(s) for s in self.bottom_mlp))
        object.__setattr__(self, "top_mlp", tuple(int(s) for s in self.top_mlp))
        if self.interaction not in ("dot", "dcn"):
            raise ValueError(f"interaction must be 'dot' or 'dcn', got {self.interaction!r}")
        if not self.bottom_mlp or min(self.bottom_mlp + self.top_mlp + (1,)) < 1:
            raise ValueError(f"MLP sizes must be positive (bottom {self.bottom_mlp}, "
                             f"top {self.top_mlp})")
        if self.interaction == "dot" and self.bottom_mlp[-1] != self.embedding_dim:
            raise ValueError(f"the dot interaction needs the bottom MLP to end at the "
                             f"embedding dim {self.embedding_dim}, got {self.bottom_mlp}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """A model with the sparse features it is built for."""

    name: str
    model: ModelConfig
    vocab_sizes: tuple[int, ...]
    """Distinct ids each feature can take (bounds its table's capacity)."""
    multi_hot: tuple[int, ...] = (1,) * NUM_SPARSE
    """Ids per sample of each feature (1: one-hot)."""
    sparse_lr: float = 0.05
    """Learning rate of the tables' fused optimizer (row-wise Adagrad by default,
    FBGEMM's: accumulator from 0, so the first step moves each element by about
    this much; 0.05 as TorchRec's DLRM example on this stream)."""
    dense_lr: float = 0.01
    """Learning rate of the MLPs' optimizer (Adam by default)."""

    def __post_init__(self):
        if len(self.vocab_sizes) != len(self.multi_hot):
            raise ValueError(f"preset {self.name!r}: {len(self.vocab_sizes)} vocab sizes but "
                             f"{len(self.multi_hot)} multi-hot sizes")


PRESETS = {
    "small": Preset(
        name="small", vocab_sizes=tuple(default_vocab_sizes()),
        model=ModelConfig(embedding_dim=16, bottom_mlp=(64, 16), top_mlp=(128, 64))),
    "tiny": Preset(
        name="tiny", vocab_sizes=tuple(default_vocab_sizes()[:4]), multi_hot=(1,) * 4,
        model=ModelConfig()),
    "criteo-kaggle": Preset(
        name="criteo-kaggle", vocab_sizes=CRITEO_KAGGLE_VOCAB, sparse_lr=0.2, dense_lr=0.001,
        model=ModelConfig(embedding_dim=16, bottom_mlp=(512, 256, 64, 16), top_mlp=(512, 256))),
    "mlperf-dlrmv2": Preset(
        name="mlperf-dlrmv2", vocab_sizes=MLPERF_TABLE_SIZES, multi_hot=MLPERF_MULTI_HOT_SIZES,
        # The reference's ``--adagrad --learning_rate 0.005`` (torchrec_dlrm README, MLPerf
        # DLRMv2): with the accumulator from 0 each id moves ~lr per step, and a sum over up
        # to 100 ids per sample diverges at the 0.2 the one-hot presets use.
        sparse_lr=0.005, dense_lr=0.001,
        model=ModelConfig(interaction="dcn", embedding_dim=128, bottom_mlp=(512, 256, 128),
                          top_mlp=(1024, 1024, 512, 256), cross_layers=3,
                          cross_low_rank=512)),
}


def bounded_capacities(vocab_sizes: Sequence[int], row_bytes: int, budget_bytes: int
                       ) -> list[int]:
    """Table capacities: CAPACITY_HEADROOM x each vocabulary (at least
    MIN_CAPACITY), lowered where needed so the tables take at most
    ``budget_bytes`` together. Large tables are cut first, to one common cap
    (water-filling); rows past a capacity are evicted by score and counted."""
    want = [max(MIN_CAPACITY, CAPACITY_HEADROOM * v) for v in vocab_sizes]
    rows = budget_bytes // row_bytes
    if sum(want) <= rows:
        return want
    if MIN_CAPACITY * len(want) > rows:
        raise ValueError(f"a table memory budget of {budget_bytes} bytes cannot hold "
                         f"{len(want)} tables of {MIN_CAPACITY} rows x {row_bytes} bytes")
    lo, hi = MIN_CAPACITY, max(want)
    while lo < hi:  # the largest cap whose tables fit
        mid = (lo + hi + 1) // 2
        if sum(min(w, mid) for w in want) <= rows:
            lo = mid
        else:
            hi = mid - 1
    return [min(w, lo) for w in want]


def sparse_specs(preset: Preset, *, optimizer: Optimizer, budget_bytes: int, seed: int = 0,
                 embedding_dim: int | None = None, admit_after: int = 1, policy: str = "lru"
                 ) -> tuple[list[TableSpec], list[FeatureSpec]]:
    """One table per sparse feature (named C1..C26 like Criteo's columns),
    capacities bounded by ``budget_bytes``; multi-hot features sum-pool;
    ``admit_after`` and ``policy``: TableSpec's, for every table."""
    dim = embedding_dim or preset.model.embedding_dim
    probe = TableSpec(name="probe", dim=dim, capacity=1, optimizer=optimizer)
    caps = bounded_capacities(preset.vocab_sizes, probe.row_bytes(), budget_bytes)
    names = SPARSE_NAMES[:len(caps)]
    tables = [TableSpec(name=n, dim=dim, capacity=c, optimizer=optimizer,
                        seed=seed * len(names) + i, admit_after=admit_after, policy=policy)
              for i, (n, c) in enumerate(zip(names, caps))]
    features = [FeatureSpec(name=n, table=n, max_ids=m, pooling="sum")
                for n, m in zip(names, preset.multi_hot)]
    return tables, features
