"""The systems compared end to end, each a strategy over the same model, data
and machine, so every comparison is fair and runnable here.

Every system trains the same network (models.dlrm: the same layers and
parameter names), on the same batches, with the same optimizers (row-wise
Adagrad on the embeddings, FBGEMM's; Adam on the MLPs) and the same embedding
memory per device: each table holds the capacity ``models.config`` gives
it (twice its vocabulary) on every system, and no system grows a table
here (full collection tables evict by score, counted). What differs is
where rows live and how they move:

- ``hypereca``: this library as a user runs it. Dynamic tables row-sharded by
  id hash, ids deduplicated before the exchange, a hot fold planned by the
  replication planner from this mesh's measured cost profile (or the
  paper's cluster's, ``profile="paper"``) and a peek at the first batches (replicated, trained data-parallel), the rest
  model-parallel; the pipeline two steps deep with a loader thread.
- ``torchrec_style``: TorchRec's row-wise model parallelism
  (``ShardingType.ROW_WISE``): all-to-all of ids and rows, fused row-wise
  Adagrad, no hot replication, input distribution one batch ahead
  (``TrainPipelineSparseDist``: here the loader thread, depth 1). Left out,
  in its favour: TorchRec sends a KJT's ids without deduplicating them
  first; this baseline runs our deduplicated exchange.
- ``hugectr_style``: HugeCTR's hybrid placement: small tables (vocabulary
  <= ``SMALL_TABLE_ROWS`` ids) data-parallel (replicated on every device, their
  gradients all-reduced), the others model-parallel; device memory only
  and no growth past the tables' capacities (full tables evict by score,
  as HierarchicalKV does). Left out: HugeCTR's own kernels and its
  frequency-based hybrid embedding (this one places by table size).
- ``tfde_style``: TensorFlow Distributed Embeddings' table-wise model
  parallelism: each table whole on one device (memory-balanced placement),
  ids not deduplicated, hashed into the table's fixed rows; here one
  row-sharded array whose shard d holds device d's tables, looked up with
  ``jnp.take`` under ``jit`` (XLA moves what it must) and updated densely.
  Left out: TFDE's own all-to-all of ids and the column slicing of tables
  too large for one device.
- ``data_parallel``: every table replicated on every device and trained
  data-parallel (XLA all-reduces the whole table's gradient each step),
  ids hashed into the table's rows ("hashing trick", collisions share a row).
- ``naive_jax``: what a JAX user writes without this library: a fixed
  ``jnp`` table per feature, row-sharded over the mesh, ids hashed into it,
  looked up with ``jnp.take`` under ``jit`` (XLA's SPMD partitioner moves
  what it must), updated densely (the whole table each step).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jax_hypereca as h
from experiments.workloads import Workload
from jax_hypereca.planner import paper_profile
from models import optimizers as opts
from models.config import ModelConfig, Preset, sparse_specs
from models.data import SyntheticSource
from models.dlrm import DLRM, MLP, interact_and_top
from models.train import SparseTrainer

SMALL_TABLE_ROWS = 10_000  # hugectr_style: vocabularies up to this are data-parallel
HOT_BUDGET_BYTES = 64 << 20  # hypereca: replicas of all hot folds, per device
PLAN_BATCHES = 8  # batches the hot plans are made from (the first ones trained on)


@dataclasses.dataclass(eq=False)
class Parts:
    """What every system shares for one workload on one mesh."""

    workload: Workload
    mesh: Any
    mcfg: ModelConfig
    tables: list
    features: list
    sparse_opt: h.Optimizer
    dense_tx: optax.GradientTransformation
    source: SyntheticSource
    profile: str = "measured"  # hypereca's planner: "measured" on this mesh, or "paper"
    profile_cache: str | None = None  # where measured profiles are kept, per mesh

    @property
    def shard_bytes(self) -> int:
        """One device's share of the tables at their capacities."""
        n = self.mesh.size
        return sum(-(-t.capacity // n) * t.row_bytes() for t in self.tables)

    def sample(self) -> dict:
        """One batch of held-out samples (to initialize parameters)."""
        return self.source.eval_set(self.workload.batch)

    def plan_batches(self) -> list[dict]:
        """The first global batches (every process sees the same: plans agree)."""
        whole = stream(self.workload, self.features)
        return [b for _, b in zip(range(PLAN_BATCHES), whole.train_batches(0))]


def parts(w: Workload, mesh, *, profile: str = "measured",
          profile_cache: str | None = None) -> Parts:
    mcfg = ModelConfig(interaction=w.interaction, embedding_dim=w.dim,
                       bottom_mlp=w.bottom_mlp, top_mlp=w.top_mlp,
                       cross_layers=w.cross_layers, cross_low_rank=w.cross_low_rank)
    preset = Preset(name=w.name, model=mcfg, vocab_sizes=w.vocab_sizes,
                    multi_hot=w.bags, sparse_lr=w.sparse_lr, dense_lr=w.dense_lr)
    sparse_opt = opts.sparse_optimizer("rowwise_adagrad", w.sparse_lr, initial_accumulator=0.0)
    dense_tx, _ = opts.dense_optimizer("adam", w.dense_lr)
    tables, features = sparse_specs(preset, optimizer=sparse_opt, budget_bytes=1 << 40,
                                    embedding_dim=w.dim)
    source = stream(w, features, jax.process_index(), jax.process_count())
    return Parts(w, mesh, mcfg, tables, features, sparse_opt, dense_tx, source, profile,
                 profile_cache)


def stream(w: Workload, features: list, process: int = 0,
           processes: int = 1) -> SyntheticSource:
    """The workload's batches, one column per feature: this process's share
    of each global batch of ``w.batch`` samples."""
    return SyntheticSource(names=[f.name for f in features], multi_hot=w.bags,
                           local_batch=w.batch // processes, process=process,
                           num_processes=processes, alpha=w.alpha, max_vocab=w.max_vocab)


# ------------------------------------------------------- collection systems
def _collection_trainer(p: Parts, depth: int) -> tuple[SparseTrainer, h.TrainState]:
    coll = h.EmbeddingCollection(p.tables, p.features, mesh=p.mesh, exchange="all_to_all",
                                 max_shard_bytes=int(p.shard_bytes * 1.01))
    model = DLRM(config=p.mcfg, features=tuple(p.features))
    params = model.init(jax.random.PRNGKey(0), p.sample())["params"]
    trainer = SparseTrainer(model, coll, p.dense_tx, depth=depth)
    return trainer, trainer.init_state(params)


def hypereca(p: Parts):
    trainer, state = _collection_trainer(p, depth=2)
    coll, rep = trainer.collection, h.replication
    if p.profile == "paper":  # planned as for the paper's 32 GPUs seeing these batches
        profile = paper_profile()
        stats = rep.peek(coll, p.plan_batches(), num_devices=profile.num_devices)
        plan = rep.plan(coll, stats, profile, memory_budget_bytes=HOT_BUDGET_BYTES)
        state = rep.apply_plan(coll, state, plan)
    else:
        profile = rep.measure_profile(coll, dim=p.workload.dim, cache_dir=p.profile_cache)
        replicator = rep.Replicator(coll, profile, memory_budget_bytes=HOT_BUDGET_BYTES)
        state = replicator.start(state, p.plan_batches())
        plan = replicator.plan
    trainer.hot_rows = dict(plan.hot_rows)
    return trainer, state


def torchrec_style(p: Parts):
    return _collection_trainer(p, depth=1)


def small_table_ids(p: Parts, batches: list[dict]) -> dict:
    """HugeCTR-style's data-parallel tables (vocabulary <= SMALL_TABLE_ROWS):
    every id of each seen in `batches`."""
    return {f.table: np.unique(np.concatenate([np.asarray(b["ids"][f.name]).reshape(-1)
                                               for b in batches]))
            for f, v in zip(p.features, p.workload.vocab_sizes) if v <= SMALL_TABLE_ROWS}


def hugectr_style(p: Parts):
    trainer, state = _collection_trainer(p, depth=1)
    small = small_table_ids(p, p.plan_batches())
    state = h.replication.apply_plan(trainer.collection, state, small)
    trainer.hot_rows = {t: len(ids) for t, ids in small.items()}
    return trainer, state


# ---------------------------------------------------------- hashed tables
class HashedState(NamedTuple):
    params: Any
    opt_state: Any
    tables: list        # [rows, dim] per feature
    accumulators: list  # [rows] per feature (row-wise Adagrad)
    step: jax.Array


class HashedDLRM(nn.Module):
    """models.dlrm.DLRM's network over embeddings pooled outside it."""

    config: ModelConfig

    @nn.compact
    def __call__(self, dense: jax.Array, embedded: list) -> jax.Array:
        x = MLP(self.config.bottom_mlp, name="bottom")(dense)
        return interact_and_top(self.config, x, embedded)


def _pool(table: jax.Array, idx: list) -> list:
    """Sum pooling of the rows of every feature looking up `table` ([B, k]
    indices each; -1 marks padding), with one gather (one gradient
    scatter-add) for them all."""
    cat = jnp.concatenate(idx, axis=1)
    rows = jnp.take(table, jnp.maximum(cat, 0), axis=0) * (cat >= 0)[..., None]
    bounds = np.cumsum([i.shape[1] for i in idx])[:-1]
    return [part.sum(axis=1) for part in jnp.split(rows, bounds, axis=1)]


def _rowwise_adagrad(opt: h.RowwiseAdagrad) -> Callable:
    """FBGEMM's EXACT_ROWWISE_ADAGRAD over a whole table (rows no id touched
    have a zero gradient: their accumulator and values do not move)."""
    def update(table, acc, g):
        acc = acc + jnp.mean(g * g, axis=1)
        step = opt.learning_rate * g / (jnp.sqrt(acc)[:, None] + opt.eps)
        return table - step, acc
    return update


def _hashed_layout(p: Parts, placement: str) -> tuple[list[int], list[tuple]]:
    """Rows of each array, and per feature (array, first row, rows) of its
    table: one array per table (replicated or row-sharded), or for
    ``table_wise`` one row-sharded array whose shard d holds the tables
    placed on device d, largest first onto the least loaded device (TFDE's
    memory-balanced placement). Every table has its capacity rounded up to
    whole shards, so every placement hashes an id into the same row."""
    n = p.mesh.size
    rows = [-(-t.capacity // n) * n for t in p.tables]
    if placement != "table_wise":
        return rows, [(i, 0, r) for i, r in enumerate(rows)]
    load, placed = [0] * n, {}
    for i in sorted(range(len(rows)), key=lambda i: -rows[i]):
        d = load.index(min(load))
        placed[i], load[d] = (d, load[d]), load[d] + rows[i]
    per = max(load)
    return [per * n], [(0, placed[i][0] * per + placed[i][1], rows[i]) for i in range(len(rows))]


class HashedTrainer:
    """submit / flush / pop_completed / predict like models.train's trainers,
    over plain ``jnp`` tables (``data_parallel``: replicated; ``naive_jax``:
    row-sharded; ``tfde_style``: table-wise). One process."""

    collection = None

    def __init__(self, p: Parts, placement: str):
        axis = p.mesh.axis_names[0]
        self.arrays, self.where = _hashed_layout(p, placement)
        self.names = [f.name for f in p.features]
        sharded = placement in ("row_sharded", "table_wise")
        self.table_sharding = NamedSharding(p.mesh, P(axis, None) if sharded else P())
        self.acc_sharding = NamedSharding(p.mesh, P(axis) if sharded else P())
        self.batch_sharding = NamedSharding(p.mesh, P(axis))
        self.replicated = NamedSharding(p.mesh, P())
        self.specs, self.dense_tx, self._done = p.tables, p.dense_tx, []
        self.model = HashedDLRM(config=p.mcfg)
        update = _rowwise_adagrad(p.sparse_opt)

        def logits(params, tables, batch):
            embedded = [None] * len(self.where)
            for a, table in enumerate(tables):
                mine = [f for f, (arr, _, _) in enumerate(self.where) if arr == a]
                for f, e in zip(mine, _pool(table, [batch["idx"][f] for f in mine])):
                    embedded[f] = e
            return self.model.apply({"params": params}, batch["dense"], embedded)

        def step(state: HashedState, batch):
            def loss_fn(params, tables):
                return optax.sigmoid_binary_cross_entropy(
                    logits(params, tables, batch), batch["labels"]).mean()

            loss, (g, gt) = jax.value_and_grad(loss_fn, argnums=(0, 1))(state.params,
                                                                        state.tables)
            updates, opt_state = self.dense_tx.update(g, state.opt_state, state.params)
            new = [update(t, a, gi) for t, a, gi in zip(state.tables, state.accumulators, gt)]
            return HashedState(optax.apply_updates(state.params, updates), opt_state,
                               [n[0] for n in new], [n[1] for n in new], state.step + 1), loss

        self._step = jax.jit(step, donate_argnums=(0,))
        self._predict = jax.jit(logits)

    def init_state(self, sample: dict) -> HashedState:
        dim = self.specs[0].dim
        values = [np.zeros((rows, dim), np.float32) for rows in self.arrays]
        for t, (a, base, rows) in zip(self.specs, self.where):
            values[a][base:base + rows] = h.init_rows(t.seed, np.arange(rows), t.dim,
                                                      t.initializer)
        tables = [jax.device_put(v, self.table_sharding) for v in values]
        accs = [jax.device_put(np.zeros((rows,), np.float32), self.acc_sharding)
                for rows in self.arrays]
        batch = self.prepare(sample)
        embedded = [jnp.zeros((len(sample["labels"]), t.dim), jnp.float32) for t in self.specs]
        params = self.model.init(jax.random.PRNGKey(0), batch["dense"], embedded)["params"]
        params = jax.device_put(params, self.replicated)
        return HashedState(params, jax.device_put(self.dense_tx.init(params), self.replicated),
                           tables, accs, jax.device_put(np.zeros((), np.int32), self.replicated))

    def prepare(self, batch) -> dict:
        """Hashes each feature's ids into its table's rows (host, numpy)."""
        idx = []
        for name, (_, base, rows) in zip(self.names, self.where):
            ids = np.asarray(batch["ids"][name], np.int64).reshape(len(batch["labels"]), -1)
            bucket = (ids.view(np.uint64) % np.uint64(rows)).astype(np.int32) + base
            idx.append(np.where(ids == h.PADDING_ID, -1, bucket))
        out = {"dense": batch["dense"], "labels": batch["labels"], "idx": idx}
        return jax.device_put(out, self.batch_sharding)

    def submit(self, state, batch):
        state, loss = self._step(state, batch)
        self._done.append(loss)
        return state

    def flush(self, state):
        return state

    def pop_completed(self) -> list[dict]:
        done, self._done = self._done, []
        return [{"loss": float(np.asarray(loss))} for loss in done]

    def predict(self, state, batch) -> jax.Array:
        b = self.prepare(batch)
        return self._predict(state.params, state.tables, b)


def data_parallel(p: Parts):
    trainer = HashedTrainer(p, "replicated")
    return trainer, trainer.init_state(p.sample())


def tfde_style(p: Parts):
    trainer = HashedTrainer(p, "table_wise")
    return trainer, trainer.init_state(p.sample())


def naive_jax(p: Parts):
    trainer = HashedTrainer(p, "row_sharded")
    return trainer, trainer.init_state(p.sample())


SYSTEMS: dict[str, Callable] = {
    "hypereca": hypereca, "torchrec_style": torchrec_style, "hugectr_style": hugectr_style,
    "tfde_style": tfde_style, "data_parallel": data_parallel, "naive_jax": naive_jax}
