"""jax_hypereca: a distributed, heterogeneous embedding key-value database for
training recommender models in JAX (after HypeReca, USENIX ATC '25).

Dynamic tables keyed by arbitrary int64 ids, rows created on first sight, the
sparse optimizer fused into the table update, all as XLA custom calls on
ordinary JAX arrays. Importing the package loads the native extension and sets
``jax_explicit_x64_dtypes='allow'`` so ids stay int64 without
``jax_enable_x64``.
"""

from jax_hypereca import _native
from jax_hypereca.errors import (
    EMPTY_KEY, ERASED_KEY, PADDING_ID, HyperecaError, NonFiniteGradientError,
    ReservedIdError, SlotOutOfRangeError, TableFullError, check_ids, raise_for_gather_status)
from jax_hypereca.hashing import owner_of
from jax_hypereca.hashing import mix64  # public: models and experiments derive ids with it
from jax_hypereca.errors import insert_status_dict  # public: benchmarks read an insert's status
from jax_hypereca.initializers import Initializer, constant, init_rows, normal, uniform
from jax_hypereca.optim import FTRL, SGD, Adagrad, Adam, Optimizer, RowwiseAdagrad
from jax_hypereca.table import (
    COUNTER_NAMES, MAX_ADMIT_AFTER, EvictedRows, InsertResult, Rows, TableSpec, TableState, apply_gradients,
    counters_dict, erase, erase_if, export, export_keys, find, find_or_insert, find_slots, gather, grow, import_rows,
    init_table)
from jax_hypereca._ops import bucketize, ids_array, unique
from jax_hypereca.host_tier import (HOST_COUNTER_NAMES, HostStager, HostStore, HostTierFullError,
                                    packed_tables, put_packed)
from jax_hypereca.features import FeatureSpec, Jagged, jagged_to_padded
from jax_hypereca.placement import make_mesh
from jax_hypereca.state import TrainState
from jax_hypereca.collection import EmbeddingCollection
from jax_hypereca.pipeline import TrainPipeline, prefetch
from jax_hypereca import replication

__version__ = "0.1.0"

has_platform = _native.has_platform

__all__ = [
    "EMPTY_KEY", "ERASED_KEY", "PADDING_ID", "HyperecaError", "NonFiniteGradientError",
    "ReservedIdError", "SlotOutOfRangeError", "TableFullError", "check_ids",
    "raise_for_gather_status", "owner_of", "Initializer", "constant",
    "init_rows", "normal", "uniform", "FTRL", "SGD", "Adagrad", "Adam", "Optimizer",
    "RowwiseAdagrad", "COUNTER_NAMES", "EvictedRows", "InsertResult", "Rows", "TableSpec",
    "TableState", "apply_gradients", "counters_dict", "erase", "erase_if", "export",
    "export_keys", "find",
    "find_or_insert", "find_slots", "gather", "grow", "import_rows", "init_table", "bucketize", "ids_array",
    "unique", "has_platform", "FeatureSpec", "Jagged", "jagged_to_padded", "make_mesh",
    "EmbeddingCollection", "TrainState", "TrainPipeline", "prefetch", "replication",
    "insert_status_dict", "mix64", "HostStore", "HostStager", "packed_tables", "put_packed", "HostTierFullError",
    "HOST_COUNTER_NAMES",
    "MAX_ADMIT_AFTER",
]
