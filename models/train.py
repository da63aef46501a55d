"""The train command: a DLRM or DCN-v2 on jax_hypereca's dynamic tables.

    python -m models.train                       # synthetic stream, 8 CPU devices, ~1 min
    python -m models.train --data day_0.gz --preset criteo-kaggle --steps 20000
    python -m models.train --checkpoint-dir ck --checkpoint-every 200 [--resume]
    python -m models.train --num-processes 2 --process-id 0 --coordinator 127.0.0.1:1234

Defaults train the ``small`` preset (models/config.py) on the synthetic
Criteo-like stream (seed 0) over 8 CPU devices (fake ones when no accelerator
is used): 1000 steps of 4096 samples, eval AUC 0.777 in under two minutes on 2
cores (the stream's Bayes AUC is about 0.80, dense features alone 0.66). Every flag is a
field of ``TrainConfig`` (``--config FILE`` reads a JSON object of them;
flags given on the command line win). Process 0 shows a progress bar and
writes one metrics JSONL file (train, eval, table, data and checkpoint
lines) and a PNG of loss and AUC over steps into ``--output-dir``; the
paths are printed at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

import jax_hypereca as h
from jax_hypereca.checkpoint import CheckpointError, CheckpointManager, check_writable
from jax_hypereca.data import DataFormatError, auc, logloss
from models.config import PRESETS, ModelConfig, Preset, sparse_specs
from models.data import CriteoSource, SyntheticSource
from models.dlrm import DLRM
from models.metrics_log import HIT_COUNTS, MetricsLog, TrainLog
from models.train_config import TrainConfig, parse_args  # noqa: F401 (the command's flags)
from models import optimizers as opts
from models import peers

log = logging.getLogger("models.train")

DEFAULT_CPU_DEVICES = 8


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s.strip())


def model_config(cfg: TrainConfig) -> tuple[Preset, ModelConfig]:
    """The preset and its network with the config's overrides applied."""
    preset = PRESETS[cfg.preset]
    m = preset.model
    dim = cfg.embedding_dim or m.embedding_dim
    bottom = _sizes(cfg.bottom_mlp) if cfg.bottom_mlp else m.bottom_mlp[:-1] + (dim,)
    over = dict(embedding_dim=dim, bottom_mlp=bottom,
                top_mlp=_sizes(cfg.top_mlp) if cfg.top_mlp else m.top_mlp)
    if cfg.model:
        over["interaction"] = "dot" if cfg.model == "dlrm" else "dcn"
    if cfg.cross_layers is not None:
        over["cross_layers"] = cfg.cross_layers
    if cfg.cross_low_rank is not None:
        over["cross_low_rank"] = cfg.cross_low_rank
    return preset, dataclasses.replace(m, **over)


# ----------------------------------------------------------------- runtime
def configure_platform(cfg: TrainConfig) -> None:
    """Before JAX starts: the platform, fake CPU devices, jax.distributed."""
    if cfg.platform == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    flags = os.environ.get("XLA_FLAGS", "")
    if cfg.platform != "gpu" and "xla_force_host_platform_device_count" not in flags:
        per_process = max(1, (cfg.devices or DEFAULT_CPU_DEVICES) // cfg.num_processes)
        os.environ["XLA_FLAGS"] = \
            f"{flags} --xla_force_host_platform_device_count={per_process}".strip()
    if cfg.num_processes > 1:
        peers.initialize(coordinator=cfg.coordinator,
                         bind=cfg.coordinator_bind or cfg.coordinator,
                         num_processes=cfg.num_processes,
                         process_id=cfg.process_id, peer_timeout_s=cfg.peer_timeout_s)


def make_mesh(cfg: TrainConfig):
    """A 1-D mesh over --devices devices (every process's, when several)."""
    n = cfg.devices or jax.device_count()
    if n > jax.device_count():
        raise ValueError(f"--devices {n}: only {jax.device_count()} devices "
                         f"({jax.default_backend()})")
    if jax.process_count() > 1 and n != jax.device_count():
        raise ValueError(f"with several processes the mesh spans every device: --devices "
                         f"must be {jax.device_count()} (or left out)")
    if cfg.batch % n:
        raise ValueError(f"--batch {cfg.batch} does not split over {n} devices")
    return h.make_mesh(jax.devices()[:n])


# ---------------------------------------------------------------- trainers
def _bce(logits, labels):
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


class SparseTrainer:
    """The model with its embeddings: an EmbeddingCollection step run by a
    TrainPipeline (`depth` steps in flight; `route_ahead`: each step routes
    the next batch's ids in its program, None: TrainPipeline's default)."""

    def __init__(self, model: DLRM, collection: h.EmbeddingCollection,
                 dense_tx: optax.GradientTransformation, *, depth: int = 2,
                 route_ahead: bool | None = None):
        self.collection = collection
        self.dense_tx = dense_tx
        self.local = jax.process_count() > 1
        apply = lambda p, emb, b: model.apply({"params": p}, b)
        self._step = collection.make_train_step(
            lambda p, emb, b: _bce(apply(p, emb, b), b["labels"]), dense_tx)
        self._pipeline = h.TrainPipeline(self._step, depth=depth, local=self.local,
                                         route_ahead=route_ahead)
        self._eval = collection.make_eval_fn(apply)

    def init_state(self, params) -> h.TrainState:
        return self.collection.init_train_state(params, self.dense_tx)

    @property
    def step_fn(self):
        """The collection's ShardedTrainStep (its re-run count, its HLO)."""
        return self._step

    def prepare(self, batch) -> dict:
        """Stage A (the loader thread): checks a host batch, places it on the mesh."""
        return self.collection.prepare_batch(batch, local=self.local)

    def submit(self, state, batch) -> h.TrainState:
        return self._pipeline.submit(state, batch)

    def flush(self, state) -> h.TrainState:
        return self._pipeline.flush(state)

    def pop_completed(self) -> list[dict]:
        return [{"step": m["step"], "loss": m["loss"],
                 "exchange_bytes_per_step": m["bytes_per_step"], "exchange": m["exchange"],
                 "step_reruns": self._step.retries, "routed_ahead": self._step.routed_ahead,
                 **{k: sum(int(st[k].sum()) for st in m["stats"].values()) for k in HIT_COUNTS}}
                for m in self._pipeline.pop_completed()]

    def predict(self, state, batch) -> jax.Array:
        """Logits of a global host batch (every process passes all of it)."""
        return self._eval(state, batch)

    def table_stats(self, state) -> dict:
        return self.collection.table_stats(state.tables, admission=state.admission)


class DenseTrainer:
    """The model without embeddings: a data-parallel jit step over the mesh."""

    collection = None

    def __init__(self, model: DLRM, mesh, dense_tx: optax.GradientTransformation):
        self.dense_tx = dense_tx
        self.batch_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
        self.replicated = NamedSharding(mesh, P())
        apply = lambda p, b: model.apply({"params": p}, b)

        def step(state, batch):
            loss, g = jax.value_and_grad(lambda p: _bce(apply(p, batch), batch["labels"]))(
                state.params)
            updates, opt_state = dense_tx.update(g, state.opt_state, state.params)
            return h.TrainState(optax.apply_updates(state.params, updates), opt_state, {},
                                state.step + 1), loss

        self._step = jax.jit(step, donate_argnums=(0,))
        self._predict = jax.jit(apply)
        self._done: list = []

    def init_state(self, params) -> h.TrainState:
        init = jax.jit(lambda p: (p, self.dense_tx.init(p), jnp.zeros((), jnp.int64)),
                       out_shardings=self.replicated)
        params, opt_state, step = init(params)
        return h.TrainState(params, opt_state, {}, step)

    def prepare(self, batch) -> dict:
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, batch[k])
                for k in ("dense", "labels")}

    def submit(self, state, batch) -> h.TrainState:
        state, loss = self._step(state, batch)
        self._done.append(loss)
        return state

    def flush(self, state) -> h.TrainState:
        return state

    def pop_completed(self) -> list[dict]:
        """Losses of the dispatched steps (their values wait for the device)."""
        done, self._done = self._done, []
        return [{"loss": float(np.asarray(loss.addressable_shards[0].data))} for loss in done]

    def predict(self, state, batch) -> jax.Array:
        """Logits of a global host batch (every process passes all of it)."""
        return self._predict(state.params,
                             {"dense": jax.device_put(batch["dense"], self.batch_sharding)})

    def table_stats(self, state) -> dict:
        return {}


def evaluate(trainer, state, eval_set: dict, batch: int) -> dict:
    """AUC and log loss of the model on the held-out set, `batch` samples at
    a time (every process calls it with the whole set)."""
    labels = eval_set["labels"]
    logits = []
    for start in range(0, len(labels), batch):
        chunk = jax.tree.map(lambda x: x[start:start + batch], eval_set)
        out = trainer.predict(state, chunk)
        logits.append(np.asarray(multihost_utils.process_allgather(out, tiled=True)))
    scores = np.concatenate(logits)
    return {"auc": auc(labels, scores),
            "logloss": logloss(labels, scores, from_logits=True),
            "samples": int(labels.size)}


# -------------------------------------------------------------------- main
def make_source(cfg: TrainConfig, preset: Preset, features) -> CriteoSource | SyntheticSource:
    """This process's data: Criteo files with --data, else the synthetic stream."""
    kw = dict(names=[f.name for f in features], multi_hot=preset.multi_hot,
              local_batch=cfg.batch // jax.process_count(), process=jax.process_index(),
              num_processes=jax.process_count())
    if cfg.data:
        return CriteoSource(cfg.data, on_bad_line=cfg.on_bad_line, eval_path=cfg.eval_data, **kw)
    return SyntheticSource(seed=cfg.seed, **kw)


def table_bytes(cfg: TrainConfig) -> int:
    """--table-memory-mb in bytes."""
    return int(cfg.table_memory_mb * (1 << 20))


def make_trainer(cfg: TrainConfig, mcfg: ModelConfig, dense_tx, mesh, tables, features,
                 sample: dict) -> tuple[SparseTrainer | DenseTrainer, h.TrainState]:
    """The model's trainer and its initial state (params from `sample`)."""
    model = DLRM(config=mcfg, features=() if cfg.dense_only else tuple(features))
    params = model.init(jax.random.PRNGKey(cfg.seed), sample)["params"]
    if cfg.dense_only:
        trainer = DenseTrainer(model, mesh, dense_tx)
    else:
        # --table-memory-mb bounds the tables: they grow while they fit it, then evict
        # (with --host-tier, to host memory).
        tier = {"ttl_steps": cfg.host_ttl_steps,
                "memory_limit_bytes": None if cfg.host_table_mb is None
                else int(cfg.host_table_mb * 2**20)} if cfg.host_tier else False
        coll = h.EmbeddingCollection(tables, features, mesh=mesh, exchange=cfg.exchange,
                                     max_shard_bytes=table_bytes(cfg) // mesh.size,
                                     host_tier=tier)
        trainer = SparseTrainer(model, coll, dense_tx, depth=cfg.pipeline_depth,
                                route_ahead={"on": True, "off": False}.get(cfg.route_ahead))
    return trainer, trainer.init_state(params)


def make_optimizers(cfg: TrainConfig, preset: Preset):
    """(sparse optimizer, dense learning rate, dense optax transform, its
    keyword arguments); unknown names or bad arguments fail here."""
    sparse_opt = opts.sparse_optimizer(
        cfg.sparse_optimizer, preset.sparse_lr if cfg.sparse_lr is None else cfg.sparse_lr,
        initial_accumulator=cfg.sparse_initial_accumulator, args=cfg.sparse_optimizer_args)
    dense_lr = preset.dense_lr if cfg.dense_lr is None else cfg.dense_lr
    dense_tx, dense_kw = opts.dense_optimizer(cfg.dense_optimizer, dense_lr,
                                         args=cfg.dense_optimizer_args)
    return sparse_opt, dense_lr, dense_tx, dense_kw


def check_fits(cfg: TrainConfig, collection: h.EmbeddingCollection, state: h.TrainState,
               source, start: int) -> None:
    """One step's ids fit its tables, or TableFullError here, before
    training; the ids of the --pipeline-depth steps in flight together
    (pinned until their step is done, I5) that do not fit are a warning:
    such steps run one at a time (the pipeline re-runs them at depth 1)."""
    window = list(itertools.islice(source.train_batches(start), cfg.pipeline_depth))
    collection.check_fits(state, window[:1])
    if len(window) > 1:
        try:
            collection.check_fits(state, window)
        except h.TableFullError as e:
            log.warning("the %d steps in flight (--pipeline-depth) do not fit together: %s "
                        "Steps whose ids do not fit together run one at a time; a larger "
                        "--table-memory-mb (--device-table-mb) or a lower --pipeline-depth "
                        "avoids it.", len(window), e)


def record_eval(trainer, state: h.TrainState, step: int, *, eval_set: dict, batch: int,
                mlog: MetricsLog, source) -> dict:
    """Evaluates on the held-out set and logs it, the tables' counters and
    the reader's counts; returns the eval metrics."""
    t0 = time.perf_counter()
    res = evaluate(trainer, state, eval_set, batch)
    mlog.emit("eval", step=step, **res, eval_s=time.perf_counter() - t0)
    stats = trainer.table_stats(state)
    if stats:
        total = {k: sum(s[k] for s in stats.values()) for k in h.COUNTER_NAMES}
        if state.admission:
            total["admission_filtered"] = sum(s.get("admission_filtered", 0)
                                              for s in stats.values())
        mlog.emit("tables", step=step, total=total, per_table=stats)
    if source.stats():
        mlog.emit("data", step=step, **source.stats())
    return res


def train_steps(cfg: TrainConfig, trainer, state: h.TrainState, start: int, source,
                mlog: MetricsLog, ckpt: CheckpointManager | None, evaluate_at):
    """Steps start + 1 .. cfg.steps with logging, evals (``evaluate_at(step,
    state)``) and checkpoints on their schedules; returns (state, the last
    train record, the last eval metrics or None). Batches are prepared by a
    loader thread (--prefetch ahead; 0: in this thread) and steps run
    --pipeline-depth ahead of their checks; the pipeline is flushed at each
    log, eval and checkpoint."""
    bar = _progress(cfg, start, enabled=jax.process_index() == 0)
    log = TrainLog(cfg, mlog, bar)
    res = None
    batches = source.train_batches(start)
    loader = (h.prefetch(batches, cfg.prefetch, trainer.prepare, name="train-loader")
              if cfg.prefetch else (trainer.prepare(b) for b in batches))
    with contextlib.closing(loader) as batches:
        for done, batch in zip(range(start + 1, cfg.steps + 1), batches):
            try:
                state = trainer.submit(state, batch)
            except h.HostTierFullError as e:
                # step `done` did not run: save the ones before it -- unless rows
                # a settle refused travel with the error (saved without them they
                # would be lost; the last checkpoint still holds them)
                if ckpt and not e.applied and not e.rows:
                    state = trainer.flush(e.state)
                    ckpt.save(state, trainer.collection,
                              extra={"config": dataclasses.asdict(cfg)})
                    ckpt.wait()
                    # the refused step may be an earlier one, re-dispatched in flight
                    e.checkpoint_step = ckpt.latest_step()
                    mlog.emit("checkpoint", step=e.checkpoint_step,
                              directory=str(ckpt.directory), reason="host tier full")
                raise
            evaluate_now = done % cfg.eval_every == 0 or done == cfg.steps
            save_now = ckpt and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                 or done == cfg.steps)
            if evaluate_now or save_now or done % cfg.log_every == 0:
                state = trainer.flush(state)
            log.pause()
            log.completed(trainer.pop_completed(), done, res)
            if evaluate_now:
                res = evaluate_at(done, state)
            if save_now:
                t0 = time.perf_counter()
                ckpt.save(state, trainer.collection, extra={"config": dataclasses.asdict(cfg)})
                mlog.emit("checkpoint", step=done, directory=str(ckpt.directory),
                          blocking_s=time.perf_counter() - t0)
            log.resume()
    bar.close()
    return state, log.last, res


def resume(ckpt: CheckpointManager, template: h.TrainState, collection
           ) -> tuple[h.TrainState, int]:
    """The newest readable checkpoint (an unreadable one is skipped with a
    warning, see CheckpointManager.restore) and its step; says which."""
    latest = ckpt.latest_step()
    state, _ = ckpt.restore(template, collection)
    step = int(np.asarray(state.step.addressable_shards[0].data))
    if jax.process_index() == 0:
        skipped = "" if step == latest else f" (the latest, step {latest}, cannot be read)"
        print(f"resumed from step {step} of {ckpt.directory}{skipped}", flush=True)
    return state, step


def train(cfg: TrainConfig) -> dict:
    """Runs the training described by `cfg`; returns the summary record."""
    t_start = time.perf_counter()
    configure_platform(cfg)
    mesh = make_mesh(cfg)
    pid, nproc = jax.process_index(), jax.process_count()
    preset, mcfg = model_config(cfg)
    # Everything that can fail on bad input fails here, before training.
    sparse_opt, dense_lr, dense_tx, dense_kw = make_optimizers(cfg, preset)
    tables, features = sparse_specs(
        preset, optimizer=sparse_opt, budget_bytes=table_bytes(cfg), seed=cfg.seed,
        embedding_dim=mcfg.embedding_dim, admit_after=cfg.admit_after,
        policy=cfg.eviction_policy)
    source = make_source(cfg, preset, features)
    ckpt = (CheckpointManager(cfg.checkpoint_dir, max_to_keep=cfg.keep_checkpoints)
            if cfg.checkpoint_dir else None)
    out_dir = check_writable(cfg.output_dir or
                             f"runs/{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    eval_batches = -(-cfg.eval_size // cfg.batch)
    eval_set = source.eval_set(eval_batches * cfg.batch)  # the whole set, on every process

    trainer, state = make_trainer(cfg, mcfg, dense_tx, mesh, tables, features,
                                  jax.tree.map(lambda x: x[:cfg.batch // nproc], eval_set))
    start = 0
    if cfg.resume and ckpt.latest_step() is not None:
        state, start = resume(ckpt, state, trainer.collection)
    if trainer.collection is not None:
        check_fits(cfg, trainer.collection, state, source, start)
    mlog = MetricsLog(out_dir / "metrics.jsonl", append=cfg.resume, enabled=pid == 0)
    mlog.emit("config", step=start, config=dataclasses.asdict(cfg), model=dataclasses.asdict(
        mcfg), source=source.describe(), devices=mesh.size, processes=nproc,
        platform=jax.default_backend(),
        optimizers=opts.describe(sparse_opt, cfg.dense_optimizer, dense_lr, dense_kw),
        params=int(sum(x.size for x in jax.tree.leaves(state.params))),
        tables={t.name: t.capacity for t in tables} if not cfg.dense_only else {})

    def evaluate_at(step: int, state: h.TrainState) -> dict:
        return record_eval(trainer, state, step, eval_set=eval_set, batch=cfg.batch, mlog=mlog,
                           source=source)

    state, last, res = train_steps(cfg, trainer, state, start, source, mlog, ckpt, evaluate_at)
    if res is None:  # nothing left to train (resumed a finished run)
        res = evaluate_at(start, state)
    if ckpt:
        ckpt.close()
    summary = mlog.emit("summary", step=max(start, cfg.steps), auc=res["auc"],
                        logloss=res["logloss"], wall_s=time.perf_counter() - t_start,
                        last_train=last, metrics=str(mlog.path),
                        plot=str(out_dir / "metrics.png"))
    mlog.close()
    if pid == 0:
        mlog.plot(out_dir / "metrics.png")
    return summary


def _progress(cfg: TrainConfig, start: int, *, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=cfg.steps * cfg.batch, initial=start * cfg.batch, unit="sample",
                unit_scale=True, disable=not (enabled and cfg.progress), dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 15)


def main(argv=None) -> int:
    """Entry point: parse, train, print where the metrics are."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    try:
        summary = train(cfg)
    except (FileNotFoundError, CheckpointError, DataFormatError, ValueError) as e:
        peers.stop_watch()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except h.TableFullError as e:  # nothing was applied: the state before the step is intact
        peers.stop_watch()
        print(f"error: {e}\n(the train command's max_shard_bytes is --table-memory-mb / "
              f"--device-table-mb {cfg.table_memory_mb} MB over the mesh's devices: raise it, "
              f"or lower --batch)", file=sys.stderr)
        return 2
    except h.HostTierFullError as e:
        peers.stop_watch()
        saved = getattr(e, "checkpoint_step", None)
        print(f"error: {e}\n(the train command's limit is --host-table-mb {cfg.host_table_mb} "
              f"per table: raise it, or give the device tier more room; "
              + (f"the {saved} steps before it are saved in --checkpoint-dir "
                 f"{cfg.checkpoint_dir}: continue with --resume)" if saved is not None else
                 "with --checkpoint-dir the steps before it are saved to --resume from, "
                 "unless rows were refused in flight: then --resume goes on from the last "
                 "periodic checkpoint)"),
              file=sys.stderr)
        return 2
    except jax.errors.JaxRuntimeError as e:
        if cfg.num_processes > 1 and peers.is_lost_peer_error(e):
            peers.exit_lost_peer([], str(e), process_id=cfg.process_id,
                                 num_processes=cfg.num_processes,
                                 peer_timeout_s=cfg.peer_timeout_s)
        raise
    if jax.process_index() == 0:
        print(f"final eval at step {summary['step']}: auc {summary['auc']:.4f} "
              f"logloss {summary['logloss']:.4f} ({summary['wall_s']:.0f} s)")
        print(f"metrics: {summary['metrics']}")
        print(f"plot: {summary['plot']}")
    if cfg.num_processes > 1:
        peers.stop_watch()
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
