"""Figures (a) end-to-end throughput and (h) AUC against wall-clock time: every
system of baselines.py on every workload of workloads.py, one run each.

    python -m experiments.end_to_end [--quick | --smoke] [--devices 8] [--out FILE]
                                     [--figures DIR]

Per workload and system, on one mesh of --devices (fake CPU devices here):
build the system (its hot plan, its profile: ``setup_s``), train
``--warmup`` steps in two rounds (compiles; untimed), then ``--steps`` steps in rounds of
``--eval-every``; after each round the steps are flushed and the held-out
AUC measured (the evaluation is off the clock). Batches come from a loader
thread two ahead for every system. Systems run one after another, each on
its own fresh state and the same batches.

Lines: ``end_to_end_point`` per evaluation (train seconds so far, AUC,
log loss), ``end_to_end`` per system (samples/s of the median round among
those that compiled nothing: a round that re-ran a step to raise an
exchange capacity, counted in ``step_reruns``, ``compiles_while_timed`` and
``rounds_compiled``, does not decide it; over all rounds too; every round's
seconds; exact counts) and last the summary: samples/s of every system and
``speedup_vs_torchrec_style`` per workload, with the paper's ratios beside.
Figures: fig_a_throughput.png and fig_h_auc_vs_time.png in --figures.
"""

from __future__ import annotations

import contextlib
import statistics
import time

from experiments.cli import mesh_bench_parser, use_fake_devices

SIZES = {"smoke": dict(steps=2, eval_every=2, warmup=2, eval_size=512),
         "quick": dict(steps=24, eval_every=8, warmup=8, eval_size=16384),
         "full": dict(steps=200, eval_every=40, warmup=10, eval_size=65536)}


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "vocabularies capped at 16k, 24 timed steps, one workload "
                                   "(criteo unless --workloads; about 4.5 minutes each)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    p.add_argument("--systems", default=None, help="comma-separated subset of the systems")
    p.add_argument("--workloads", default=None,
                   help="comma-separated subset (criteo,taobao; --quick's default: criteo)")
    p.add_argument("--figures", default="experiments/results/figures")
    p.add_argument("--profile", choices=("measured", "paper"), default=None,
                   help="the cost profile hypereca's planner plans with: this mesh's, "
                        "measured (default), or the paper's cluster's (--smoke's default: "
                        "no measuring, and a hot fold on any mesh)")
    p.add_argument("--profile-cache", default="build/profile-cache",
                   help="measured cost profiles, per mesh (hypereca's planner)")
    for k in ("steps", "eval_every", "warmup", "eval_size"):
        p.add_argument(f"--{k.replace('_', '-')}", type=int, default=None)
    args = p.parse_args(argv)
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.profile = args.profile or ("paper" if args.smoke else "measured")
    if args.workloads is None and args.size == "quick":  # one workload: minutes, not ten
        args.workloads = "criteo"
    for k, v in SIZES[args.size].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def _timed_round(trainer, state, batches, n: int):
    """n steps, flushed and finished: (state, seconds, losses)."""
    import jax

    t0 = time.perf_counter()
    for _ in range(n):
        state = trainer.submit(state, next(batches))
    state = trainer.flush(state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    return state, seconds, [r["loss"] for r in trainer.pop_completed()]


def _warm_up(trainer, state, batches, steps: int):
    """`steps` untimed steps in two rounds (a system's first steps may compile
    more than one program: the state a step returns can differ in layout
    from the one it was given): (state, seconds, compiles). Every system
    warms up on the same number of batches, so the evaluation points of all
    systems come after the same steps."""
    from experiments.harness import CompileCounter

    before, seconds = CompileCounter.get().count, 0.0
    for n in (steps - steps // 2, steps // 2):
        state, s, _ = _timed_round(trainer, state, batches, n)
        seconds += s
    return state, seconds, CompileCounter.get().count - before


def run_system(name: str, p, args, out, bench: str = "end_to_end") -> dict:
    """One system's run on one workload: its evaluation points (``{bench}_point``)
    and summary (``bench``)."""
    import jax_hypereca as h
    from models.train import evaluate

    from experiments.baselines import SYSTEMS
    from experiments.harness import CompileCounter

    tag = dict(workload=p.workload.name, system=name, devices=p.mesh.size, batch=p.workload.batch)
    t0 = time.perf_counter()
    trainer, state = SYSTEMS[name](p)
    setup_s = time.perf_counter() - t0
    eval_set = p.source.eval_set(args.eval_size)
    loader = h.prefetch(p.source.train_batches(0), 2, trainer.prepare, name=f"{name}-loader")
    clock, points, counter, rounds, compiled = 0.0, [], CompileCounter.get(), [], []
    with contextlib.closing(loader) as batches:
        state, warmup_s, warm = _warm_up(trainer, state, batches, args.warmup)
        for done in range(args.eval_every, args.steps + 1, args.eval_every):
            before = counter.count
            state, seconds, losses = _timed_round(trainer, state, batches, args.eval_every)
            compiled.append(counter.count - before)
            clock += seconds
            rounds.append(seconds)
            res = evaluate(trainer, state, eval_set, p.workload.batch)
            points.append(out.emit(dict(bench=f"{bench}_point", **tag,
                                        step=args.warmup + done,
                                        train_s=round(clock, 4), auc=res["auc"],
                                        logloss=res["logloss"],
                                        train_loss=sum(losses) / len(losses))))
    timed = args.steps // args.eval_every * args.eval_every
    clean = [s for s, c in zip(rounds, compiled) if c == 0] or rounds
    step_s = statistics.median(clean) / args.eval_every
    hot = {t: int(r) for t, r in getattr(trainer, "hot_rows", {}).items()}
    record = dict(bench=bench, **tag, samples_per_s=p.workload.batch / step_s,
                  step_s=step_s, samples_per_s_all_rounds=timed * p.workload.batch / clock,
                  timed_steps=timed, setup_s=round(setup_s, 3),
                  warmup_steps=args.warmup, warmup_s=round(warmup_s, 3),
                  warmup_compiles=warm, compiles_while_timed=sum(compiled),
                  rounds_s=[round(s, 4) for s in rounds], rounds_compiled=compiled,
                  auc=points[-1]["auc"],
                  hot_rows=sum(hot.values()), hot_rows_per_table=hot,
                  **_counts(trainer, state))
    return out.emit(record)


def _counts(trainer, state) -> dict:
    """Exact counters of the collection systems (evictions, re-runs)."""
    if trainer.collection is None:
        return {}
    import jax_hypereca as h

    totals = h.replication.fold_counters(state)
    return dict(evicted=sum(c["evicted"] for c in totals.values()),
                rows=sum(c["size"] for c in totals.values()),
                step_reruns=trainer.step_fn.retries)


def summarize(records: list[dict]) -> dict:
    """samples/s per workload and system, and each system over TorchRec-style."""
    from experiments.figures import paper_speedups

    paper = paper_speedups()
    out = {"bench": "end_to_end_summary", "samples_per_s": {}, "speedup_vs_torchrec_style": {},
           "paper_speedup_vs_torchrec": {}}
    for r in records:
        out["samples_per_s"].setdefault(r["workload"], {})[r["system"]] = \
            round(r["samples_per_s"], 1)
    for wl, by in out["samples_per_s"].items():
        base = by.get("torchrec_style")
        if base:
            out["speedup_vs_torchrec_style"][wl] = {s: round(v / base, 3) for s, v in by.items()}
        if wl in paper:
            out["paper_speedup_vs_torchrec"][wl] = paper[wl]
    return out


def main(argv=None) -> int:
    args = parse(argv)
    use_fake_devices(args.devices)
    import jax

    import jax_hypereca as h
    from experiments import baselines, end_to_end_figures
    from experiments.harness import JsonLines, environment, peak_rss_mb, release_memory
    from experiments.workloads import workloads

    out = JsonLines(args.out)
    out.emit(environment())
    mesh = h.make_mesh(jax.devices()[:args.devices])
    names = args.systems.split(",") if args.systems else list(baselines.SYSTEMS)
    chosen = workloads(args.size)
    if args.workloads:
        chosen = {k: chosen[k] for k in args.workloads.split(",")}
    records = []
    for w in chosen.values():
        out.emit(dict(bench="end_to_end_workload", devices=args.devices, size=args.size,
                      steps=args.steps, warmup=args.warmup, hypereca_profile=args.profile,
                      **w.describe()))
        p = baselines.parts(w, mesh, profile=args.profile, profile_cache=args.profile_cache)
        for name in names:
            records.append(run_system(name, p, args, out))
            release_memory()
    summary = summarize(records)
    summary["figures"] = end_to_end_figures.plot(out.records, args.figures)
    summary["peak_rss_mb"] = peak_rss_mb()
    out.emit(summary)
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
