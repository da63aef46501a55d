"""The train command's flags: ``TrainConfig`` (every flag is a field, checked
when it is built) and ``parse_args`` (flags and ``--config FILE``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import jax_hypereca as h
from models.config import PRESETS
from models import optimizers as opts

DESCRIPTION = "The train command: a DLRM or DCN-v2 on jax_hypereca's dynamic tables."


def _field(default, help: str, **kw):
    return dataclasses.field(default=default, metadata={"help": help, **kw})


_DEFAULT_TABLE_MB = 512


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything the train command does; each field is a flag (``--batch``
    for ``batch``)."""

    preset: str = _field("small", "model preset", choices=tuple(PRESETS))
    model: str | None = _field(None, "interaction: dlrm (dot) or dcn (DCN-v2 cross network); "
                                     "default: the preset's", choices=("dlrm", "dcn"))
    embedding_dim: int | None = _field(None, "embedding width (default: the preset's)")
    bottom_mlp: str | None = _field(None, "bottom MLP sizes, e.g. 64,16 (default: preset's)")
    top_mlp: str | None = _field(None, "top MLP hidden sizes, e.g. 128,64 (default: preset's)")
    cross_layers: int | None = _field(None, "DCN cross layers (default: the preset's)")
    cross_low_rank: int | None = _field(None, "DCN cross rank, 0 = full (default: preset's)")
    dense_only: bool = _field(False, "dense features only (the model without its tables)")
    data: str | None = _field(None, "Criteo file or directory (raw TSV or CSV, gzip ok); "
                                    "default: the synthetic stream")
    eval_data: str | None = _field(None, "held-out Criteo files (default: the first "
                                         "--eval-size lines of --data, not trained on)")
    on_bad_line: str = _field("skip", "malformed data line: skip (counted) or raise",
                              choices=("skip", "raise"))
    batch: int = _field(4096, "global batch (samples per step over all devices)")
    steps: int = _field(1000, "training steps")
    eval_every: int = _field(200, "steps between evaluations (and at the end)")
    eval_size: int = _field(65536, "held-out samples per evaluation (rounded up to batches)")
    log_every: int = _field(50, "steps between train-loss lines in the metrics")
    sparse_optimizer: str = _field("rowwise_adagrad", "fused table optimizer (rowwise_adagrad "
                                   "is FBGEMM's EXACT_ROWWISE_ADAGRAD)", choices=tuple(opts.SPARSE))
    sparse_lr: float | None = _field(None, "table learning rate (default: the preset's)")
    sparse_initial_accumulator: float | None = _field(
        None, "initial accumulator of rowwise_adagrad, adagrad or ftrl (default: the "
              "optimizer's: 0 for rowwise_adagrad as FBGEMM, 0.1 for adagrad as optax)")
    sparse_optimizer_args: str | None = _field(
        None, 'other fields of the table optimizer as a JSON object, e.g. \'{"eps": 1e-8}\'')
    dense_optimizer: str = _field("adam", "optax optimizer of the MLPs", choices=opts.DENSE)
    dense_lr: float | None = _field(None, "MLP learning rate (default: the preset's)")
    dense_optimizer_args: str | None = _field(
        None, "keyword arguments of the optax optimizer as a JSON object, e.g. "
              '\'{"initial_accumulator_value": 0.0, "eps": 1e-8}\' (torch.optim.Adagrad\'s)')
    exchange: str = _field("auto", "how ids, rows and gradients move between devices: "
                           "all_to_all, ring, or auto (both timed on the first steps, the "
                           "faster kept)", choices=("all_to_all", "ring", "auto"))
    pipeline_depth: int = _field(2, "train steps in flight before the host checks the oldest "
                                    "(1: each step checked before the next starts)")
    route_ahead: str = _field("auto", "with --pipeline-depth >= 2, each step's program routes "
                                      "the next batch's ids to their owners (its id exchange "
                                      "can overlap the step): on, off, or auto (on but on "
                                      "CPU, where it measured 0-5%% slower)",
                              choices=("auto", "on", "off"))
    prefetch: int = _field(3, "batches the loader thread prepares ahead (stage A); 0: "
                              "prepared in the training thread (no loader thread: faster "
                              "where XLA already keeps every core busy, e.g. 2 CPU cores)")
    table_memory_mb: float = _field(_DEFAULT_TABLE_MB, "memory budget of all tables (bounds "
                                                      "capacities); with --host-tier, of the "
                                                      "device tier")
    host_tier: bool = _field(False, "keep the rows the tables evict in host memory and bring "
                                    "them back when a batch needs them: tables larger than "
                                    "--table-memory-mb train as if all on the device")
    device_table_mb: float | None = _field(None, "the device tier's memory budget (MB) with "
                                                 "the host tier behind it: the same as "
                                                 "--host-tier --table-memory-mb N")
    host_table_mb: float | None = _field(None, "with --host-tier: the most host memory (MB) "
                                               "each table's host tier may hold (default: no "
                                               "limit); a step whose demotions might not fit "
                                               "is not run: the command saves a checkpoint "
                                               "(with --checkpoint-dir) and exits, naming this "
                                               "flag")
    host_ttl_steps: int | None = _field(None, "with --host-tier: rows in host memory not "
                                              "looked up for this many steps are dropped "
                                              "(counted as ttl_evicted; default: kept)")
    eviction_policy: str = _field("lru", "which rows a full table evicts (to the host tier "
                                         "with --host-tier): lru, the least recently looked "
                                         "up; lfu, the least often (what a skewed stream "
                                         "rewards: experiments/bench_tiers.py)",
                                  choices=("lru", "lfu"))
    admit_after: int = _field(1, "admission: an id gets a table row in the step it is seen "
                                 "in for the N-th time; until then it trains nothing and "
                                 "looks up a zero row (1: every id at once)")
    seed: int = _field(0, "seed of the data stream, the tables and the MLPs")
    devices: int | None = _field(None, "devices in the mesh (default: all; on CPU 8 fake ones)")
    platform: str = _field("auto", "cpu, gpu, or auto (jax's default backend)",
                           choices=("auto", "cpu", "gpu"))
    output_dir: str | None = _field(None, "where metrics.jsonl and metrics.png go "
                                          "(default: runs/<preset>-<time>)")
    checkpoint_dir: str | None = _field(None, "Orbax checkpoints (default: none)")
    checkpoint_every: int = _field(0, "steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = _field(2, "newest checkpoints kept")
    resume: bool = _field(False, "continue from the latest checkpoint in --checkpoint-dir")
    coordinator: str | None = _field(os.environ.get("JAX_COORDINATOR_ADDRESS"),
                                     "multi-process: host:port of process 0 "
                                     "(env JAX_COORDINATOR_ADDRESS)")
    coordinator_bind: str | None = _field(
        os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"),
        "multi-process: host:port process 0's coordinator listens on (default: the "
        "--coordinator address itself, not every interface; it has no authentication); "
        "'0.0.0.0:PORT' when --coordinator names an address of a NAT or proxy")
    num_processes: int = _field(int(os.environ.get("JAX_NUM_PROCESSES", 1)),
                                "multi-process: process count (env JAX_NUM_PROCESSES)")
    process_id: int = _field(int(os.environ.get("JAX_PROCESS_ID", 0)),
                             "multi-process: this process (env JAX_PROCESS_ID)")
    peer_timeout_s: int = _field(30, "multi-process: seconds without a heartbeat after which "
                                     "a process is declared lost; the others then exit with "
                                     "status 2 and an error naming it")
    progress: bool = _field(True, "show a progress bar")

    def __post_init__(self):
        if self.device_table_mb is not None:
            default = _DEFAULT_TABLE_MB
            if self.table_memory_mb not in (default, self.device_table_mb):
                raise ValueError(f"--device-table-mb {self.device_table_mb} and --table-memory-mb "
                                 f"{self.table_memory_mb} name two device budgets: give one")
            object.__setattr__(self, "table_memory_mb", self.device_table_mb)
            object.__setattr__(self, "host_tier", True)
        for flag in ("host_ttl_steps", "host_table_mb"):
            if getattr(self, flag) is not None and not self.host_tier:
                raise ValueError(f"--{flag.replace('_', '-')} needs --host-tier")
        if self.host_table_mb is not None and not self.host_table_mb > 0:
            raise ValueError(f"--host-table-mb must be > 0, got {self.host_table_mb}")
        if not self.table_memory_mb > 0:
            raise ValueError(f"--table-memory-mb must be > 0, got {self.table_memory_mb}")
        for name in ("batch", "steps", "eval_every", "eval_size", "log_every",
                     "num_processes", "pipeline_depth", "prefetch", "peer_timeout_s"):
            least = 0 if name == "prefetch" else 1
            if getattr(self, name) < least:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {least}, "
                                 f"got {getattr(self, name)}")
        if not 1 <= self.admit_after <= h.MAX_ADMIT_AFTER:
            raise ValueError(f"--admit-after must be in 1..{h.MAX_ADMIT_AFTER} (steps an id is "
                             f"seen in before it gets a row), got {self.admit_after}")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"--process-id must be in [0, {self.num_processes}), "
                             f"got {self.process_id}")
        if self.num_processes > 1 and not self.coordinator:
            raise ValueError("--num-processes > 1 needs --coordinator host:port")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("--resume needs --checkpoint-dir")
        if self.batch % self.num_processes:
            raise ValueError(f"--batch {self.batch} does not split over "
                             f"{self.num_processes} processes")


def parse_args(argv=None) -> TrainConfig:
    """TrainConfig from flags (and ``--config FILE``, a JSON object of fields)."""
    p = argparse.ArgumentParser(prog="python -m models.train",
                                description=DESCRIPTION)
    p.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        shown = f.default is not None and not isinstance(f.default, bool)
        kw = dict(help=f.metadata["help"] + (f" (default: {f.default})" if shown else ""),
                  default=f.default)
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            p.add_argument(flag, type=_field_type(f), **kw)
    args = p.parse_args(argv)
    if args.config:
        with open(args.config) as fh:
            given = json.load(fh)
        unknown = set(given) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            p.error(f"{args.config}: unknown fields {sorted(unknown)}")
        p.set_defaults(**given)
        args = p.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**values)
    except ValueError as e:
        p.error(str(e))


def _field_type(f: dataclasses.Field):
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    return int if kind.startswith("int") else float if kind.startswith("float") else str
