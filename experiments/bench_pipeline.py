"""The pipelined train loop against the synchronous one and the dense-only model.

    python -m experiments.bench_pipeline [--quick] [--devices 8] [--out FILE]

Workload (TorchRec 1.8's DLRM example, run on the synthetic Criteo-like
stream, seed 0): 26 one-hot features, tables of twice each Criteo-Kaggle
vocabulary capped at --max-vocab (1M as TorchRec's example; 25k with
--quick), dim 64, bottom MLP 512-256-64, top 512-256-1 (dot interaction),
batch 4096, fused row-wise Adagrad (lr 0.05, accumulators from 0) and Adam
(lr 0.001) on the MLPs. ``max_shard_bytes`` is the tables' spec capacities:
small tables start below theirs and grow to it during the warm-up (each
growth re-runs a step and recompiles it, which is not what this measures;
the warm-up goes on until 3 steps neither re-run nor compile, and the timed
lines count any that still do); past it rows are evicted and counted.

Per device count (1 and --devices), interleaved in one run: samples/s of the
dense-only model (no tables), of the full model's dense part alone (the same
network as the sparse model, embeddings a fixed input: the ceiling of a
sparse step, dense_ceiling.py), of the synchronous step (each step's
statistics read before the next is dispatched, batches prepared in the main
thread: the loop before the pipeline) and of the pipeline at depths 1-3
(batches prepared by the loader thread, stage A; steps `depth` ahead of
their checks; at depths 2-3 each step's program routes the next batch's ids)
and at depth 2 with each step routing its own (``depth_2_own_routes``).
Then stage A alone (samples/s of the loader thread with no training), and a
jax.profiler trace of pipelined steps
(``--trace-dir``, default results/trace) with XLA:CPU's per-op events
(``--xla_cpu_enable_xprof_traceme``); the device time of each op is
attributed to the step's stages by the ``stage_*`` named scopes of
lookup.py and steps.py (HLO metadata), the host's by its Python functions.

Last line: the summary with ``vs_dense_only`` (pipelined samples/s at the
best depth / dense-only, 1 device), ``vs_dense_part`` (the same / the full
model's dense part alone), ``pipeline_speedup`` (best pipelined /
synchronous, 1 device), ``route_ahead_speedup`` (depth 2 / depth 2 with
each step routing its own ids), ``host_stage_headroom`` (stage A alone / pipelined)
and the per-stage breakdown (milliseconds per step, 1 device).
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import json
import os
import pathlib
import re
import sys
import time
from collections import Counter

from experiments.cli import mesh_bench_parser, use_fake_devices

DEPTHS = (1, 2, 3)
OWN_ROUTES = "own_routes"  # depth 2, each step routing its own batch's ids (depth 2's
                           # collection and state: timed in turns, no second set of tables)
WARMUP_ROUNDS = 10  # of 3 steps each, until one compiles nothing and re-runs nothing
TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "fewer steps, vocabularies capped at 25k "
                                   "(about 4 minutes, under 4 GB)")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--max-vocab", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    p.add_argument("--trace-dir", default="experiments/results/trace")
    args = p.parse_args(argv)
    args.max_vocab = args.max_vocab or (25_000 if args.quick else 1_000_000)
    args.steps = args.steps or (12 if args.quick else 40)
    return args


@dataclasses.dataclass(eq=False)
class Setup:
    """One device count's trainers (built once, then timed in turns)."""

    devices: int
    sparse: dict          # depth -> SparseTrainer (0: the synchronous step; OWN_ROUTES)
    dense: object
    ceiling: object       # the full model's dense part alone (dense_ceiling.py)
    states: dict
    source: object
    rows: int


def build(args, n: int) -> Setup:
    import jax
    import jax_hypereca as h
    from models import optimizers as opts
    from models.config import PRESETS, ModelConfig, sparse_specs
    from models.data import SyntheticSource
    from models.dlrm import DLRM
    from models.train import DenseTrainer, SparseTrainer

    from experiments.dense_ceiling import FixedEmbeddingTrainer

    base = PRESETS["criteo-kaggle"]
    preset = dataclasses.replace(base, vocab_sizes=tuple(min(v, args.max_vocab)
                                                        for v in base.vocab_sizes))
    mcfg = ModelConfig(embedding_dim=64, bottom_mlp=(512, 256, 64), top_mlp=(512, 256))
    sparse_opt = opts.sparse_optimizer("rowwise_adagrad", 0.05, initial_accumulator=0.0)
    dense_tx, _ = opts.dense_optimizer("adam", 0.001)
    tables, features = sparse_specs(preset, optimizer=sparse_opt, budget_bytes=1 << 40,
                                    embedding_dim=64)
    mesh = h.make_mesh(jax.devices()[:n])
    source = SyntheticSource(names=[f.name for f in features], multi_hot=preset.multi_hot,
                             local_batch=args.batch)
    sample = jax.tree.map(lambda x: x[:args.batch], source.eval_set(args.batch))
    model = DLRM(config=mcfg, features=tuple(features))
    params = model.init(jax.random.PRNGKey(0), sample)["params"]
    rows = sum(t.capacity for t in tables)
    shard_bytes = sum(t.capacity // n * t.row_bytes() for t in tables)
    sparse, states = {}, {}
    for depth in (0,) + DEPTHS:  # each its own tables: the timings must not share state
        coll = h.EmbeddingCollection(tables, features, mesh=mesh, exchange="all_to_all",
                                     max_shard_bytes=int(shard_bytes * 1.01))
        sparse[depth] = SparseTrainer(model, coll, dense_tx, depth=max(depth, 1),
                                      route_ahead=True)
        states[depth] = sparse[depth].init_state(params)
    sparse[OWN_ROUTES] = SparseTrainer(model, sparse[2].collection, dense_tx, depth=2,
                                       route_ahead=False)
    dense_model = DLRM(config=mcfg, features=())
    dense = DenseTrainer(dense_model, mesh, dense_tx)
    states["dense"] = dense.init_state(dense_model.init(jax.random.PRNGKey(0), sample)["params"])
    ceiling = FixedEmbeddingTrainer(mcfg, len(features), args.batch, mesh, dense_tx)
    states["ceiling"] = ceiling.init_state(sample["dense"])
    return Setup(n, sparse, dense, ceiling, states, source, rows)


def run_variant(setup: Setup, which, steps: int, gens: dict) -> float:
    """Seconds for `steps` steps of one variant, its state carried over;
    "dense", 0 (synchronous: batches prepared in the main thread) or a
    pipeline depth (batches prepared by the loader thread)."""
    import jax_hypereca as h

    trainer = {"dense": setup.dense, "ceiling": setup.ceiling}.get(which) or setup.sparse[which]
    fn = None if which == 0 else trainer.prepare
    key = 2 if which == OWN_ROUTES else which
    state = setup.states[key]
    t0 = time.perf_counter()
    loader = h.prefetch(gens[which], 3, fn, name="bench-loader")
    try:
        for _ in range(steps):
            state = trainer.submit(state, next(loader))
        state = trainer.flush(state)
        trainer.pop_completed()  # reads the last loss: waits for the device
    finally:
        loader.close()
    seconds = time.perf_counter() - t0
    setup.states[key] = state
    return seconds


def time_variants(setup: Setup, args, out) -> dict:
    """Samples/s of every variant, warmed up (compiled), then timed in turns."""
    variants = ["dense", "ceiling", 0, *DEPTHS, OWN_ROUTES]
    gens = {v: setup.source.train_batches(0) for v in variants}
    programs = lambda v: setup.sparse[v].step_fn.programs if v in setup.sparse else 0
    reruns = lambda v: setup.sparse[v].step_fn.retries if v in setup.sparse else 0
    for v in variants:  # warm up until a few steps neither compile nor re-run (capacities
        for _ in range(WARMUP_ROUNDS):  # settled, tables grown to their budget)
            before = programs(v), reruns(v)
            run_variant(setup, v, 3, gens)
            if (programs(v), reruns(v)) == before:
                break
    seconds, compiles, reran = Counter(), Counter(), Counter()
    rounds = 2
    for _ in range(rounds):
        for v in variants:
            before = programs(v), reruns(v)
            seconds[v] += run_variant(setup, v, args.steps // rounds, gens)
            compiles[v] += programs(v) - before[0]
            reran[v] += reruns(v) - before[1]
    rates = {}
    for v in variants:
        name = {"dense": "dense_only", "ceiling": "dense_part_of_full_model",
                0: "synchronous", OWN_ROUTES: "depth_2_own_routes"}.get(v, f"depth_{v}")
        steps = rounds * (args.steps // rounds)
        rates[name] = steps * args.batch / seconds[v]
        out.emit({"bench": "pipeline_variant", "devices": setup.devices, "variant": name,
                  "samples_per_s": rates[name], "steps": steps, "batch": args.batch,
                  "seconds": seconds[v], "table_rows": setup.rows,
                  "reruns_while_timed": reran[v], "compiles_while_timed": compiles[v]})
    return rates


def time_stage_a(setup: Setup, args, out) -> float:
    """Samples/s of the loader thread alone (read, parse, check, place)."""
    import jax_hypereca as h

    n = max(args.steps, 8)
    loader = h.prefetch(setup.source.train_batches(10_000), 3, setup.sparse[0].prepare,
                        name="bench-loader")
    try:
        next(loader)
        t0 = time.perf_counter()
        for _ in range(n):
            next(loader)
        rate = n * args.batch / (time.perf_counter() - t0)
    finally:
        loader.close()
    out.emit({"bench": "stage_a", "devices": setup.devices, "threads": 1,
              "samples_per_s": rate, "batches": n})
    return rate


# (file, function) of the host's work per step in the trace's Python events.
HOST_STAGES = {("collection", "prepare_batch"): "host_prepare",
               ("steps", "dispatch"): "host_dispatch", ("steps", "check"): "host_sync"}


def op_stages(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> the step stage its metadata names (the
    innermost ``stage_*`` scope), for the compiled step's instructions."""
    out = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo_text,
                         re.M):
        scopes = re.findall(r"stage_(\w+)", m.group(2))
        out[m.group(1)] = scopes[-1] if scopes else "other"
    return out


def stage_breakdown(trace_file: pathlib.Path, stages: dict[str, str], steps: int) -> dict:
    """Milliseconds per step of each stage in a perfetto trace: device ops by
    their HLO stage (sum of the ops' durations), host work by function."""
    events = json.load(gzip.open(trace_file))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total = Counter()
    for e in events:
        if e.get("ph") != "X":
            continue
        name = e["name"]
        if name in stages:
            total[stages[name]] += e["dur"]
            continue
        fn = re.match(r"\$(\w+)\.py:\d+ (\w+)$", name)
        if fn and (fn.group(1), fn.group(2)) in HOST_STAGES:
            total[HOST_STAGES[fn.group(1), fn.group(2)]] += e["dur"]
    return {k: round(v / 1e3 / steps, 2) for k, v in sorted(total.items())}


def profile(setup: Setup, args, out, depth: int) -> dict:
    """A jax.profiler trace of pipelined steps and its per-stage breakdown."""
    import jax

    trainer = setup.sparse[depth]
    batch = trainer.prepare(next(setup.source.train_batches(20_000)))
    # at depth >= 2 the steps run the pipeline's form (the next batch's ids routed in it)
    hlo = trainer.step_fn.lower(setup.states[depth], batch,
                                batch if depth > 1 else None).compile().as_text()
    trace_dir = pathlib.Path(args.trace_dir) / f"devices{setup.devices}"
    trace_dir.mkdir(parents=True, exist_ok=True)
    (trace_dir / "step.hlo.txt").write_text(hlo)  # op names -> stages, for a closer look
    steps = 4
    gens = {depth: setup.source.train_batches(30_000)}
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    try:
        run_variant(setup, depth, steps, gens)
    finally:
        jax.profiler.stop_trace()
    trace = max(trace_dir.glob("plugins/profile/*/perfetto_trace.json.gz"),
                key=lambda p: p.stat().st_mtime)
    table = stage_breakdown(trace, op_stages(hlo), steps)
    out.emit({"bench": "stage_breakdown", "devices": setup.devices, "depth": depth,
              "ms_per_step": table, "steps": steps, "trace": str(trace),
              "note": "device stages: summed XLA:CPU op times (ops of one step may run "
                      "concurrently on the thread pool); host: Python function times"})
    return table


def main(argv=None) -> dict:
    args = parse(argv)
    use_fake_devices(args.devices)
    if "jax" not in sys.modules:  # XLA:CPU per-op trace events
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " " + TRACE_FLAG

    from experiments.harness import JsonLines, environment, peak_rss_mb

    out = JsonLines(args.out)
    out.emit(environment())
    summary = {"bench": "summary"}
    for n in sorted({1, args.devices}):
        setup = build(args, n)
        rates = time_variants(setup, args, out)
        best = max(DEPTHS, key=lambda d: rates[f"depth_{d}"])
        stage_a = time_stage_a(setup, args, out)
        table = profile(setup, args, out, best)
        if n == 1:
            summary.update(
                vs_dense_only=rates[f"depth_{best}"] / rates["dense_only"],
                vs_dense_part=rates[f"depth_{best}"] / rates["dense_part_of_full_model"],
                pipeline_speedup=rates[f"depth_{best}"] / rates["synchronous"],
                host_stage_headroom=stage_a / rates[f"depth_{best}"], best_depth=best,
                route_ahead_speedup=rates["depth_2"] / rates["depth_2_own_routes"],
                samples_per_s=rates, breakdown_ms=table)
        else:
            summary[f"devices{n}"] = {"samples_per_s": rates, "breakdown_ms": table,
                                      "route_ahead_speedup":
                                          rates["depth_2"] / rates["depth_2_own_routes"],
                                      "pipeline_speedup":
                                          rates[f"depth_{best}"] / rates["synchronous"]}
        del setup
        gc.collect()
        out.emit({"bench": "memory", "devices": n, "peak_rss_mb": peak_rss_mb()})
    summary["peak_rss_mb"] = peak_rss_mb()
    out.emit(summary)
    out.close()
    return summary


if __name__ == "__main__":
    main()
