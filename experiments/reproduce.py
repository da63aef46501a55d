"""Reproduce the paper's figures: every figure script in turn, then one HTML
index page with every figure and its numbers.

    python -m experiments.reproduce [--quick | --smoke] [--devices 8] [--results DIR]

Each step runs in its own process (its own fake-device count, its memory
returned when it ends) and writes its JSON lines and figures into
``--results`` (default experiments/results/reproduce[-quick|-smoke]):

- end_to_end, once per workload (Criteo-like, Taobao-like; --smoke: the
  first), then end_to_end_figures: (a) throughput of every system of
  baselines.py and (h) AUC against wall-clock time;
- scaling_processes then scaling: (b) weak (full size: and strong) scaling
  over 1-8 devices, and the 8-device mesh split over 2 processes;
- bench_index: (c) index throughput, the batched index vs a single-lock one;
- projection: the cost model fitted to every step measured in (a) and (b),
  its leave-one-out error, and its projection to 32 V100s and 32 H100s
  beside the paper's numbers (--smoke: 512 samples per GPU, not 16384);
- bench_replication then replication_figures: (e) the two-fold ablation
  (step time against R with the cost model) and (f) coverage rho(R);
- bench_pipeline and bench_exchange then micro_figures: (g) the step's time
  per stage and (d) ring vs all-to-all.

``--smoke`` re-runs none of the micro-benchmarks: it plots their committed
quick runs (experiments/results/bench_*_quick.jsonl). ``--quick`` re-runs
bench_pipeline but not bench_replication and bench_exchange (5.5 and 5
more minutes: past its 20; their committed quick runs, made by the same
code, are plotted and the summary says so); full sizes re-run all three.

The last line printed (and summary.json) is the run's summary:
``speedup_vs_torchrec_style`` per workload at --devices, ``projection_error``,
the projected speedups per cluster, every step's
seconds and exit status, and the figures. A failed step is reported and the
others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import html
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
COMMITTED = {  # the micro-benchmarks' committed quick runs (README's numbers)
    "replication": HERE / "results" / "bench_replication_cpu_quick.jsonl",
    "pipeline": HERE / "results" / "bench_pipeline_quick.jsonl",
    "exchange": HERE / "results" / "bench_exchange_cpu_quick.jsonl",
}
WORKLOADS = {"smoke": ("criteo",), "quick": ("criteo", "taobao"),
             "full": ("criteo", "taobao", "mlperf")}
FIGURES = {  # file -> (paper figure it mirrors, what it shows)
    "fig_a_throughput.png": ("Fig. 14", "(a) end-to-end throughput of every system"),
    "fig_b_scaling.png": ("the scalability experiment", "(b) weak (and strong) scaling"),
    "fig_c_index.png": ("the index experiment (8.26x)", "(c) index throughput: batched vs "
                        "single-lock vs hashing"),
    "fig_p_projection.png": ("Fig. 14 at 32 GPUs", "projection to 32 V100 / H100, "
                             "validated on the steps measured here"),
    "fig_h_auc_vs_time.png": ("none (beyond the paper)", "(h) held-out AUC vs training time"),
    "fig_e_ablation.png": ("the two-fold ablation", "(e) step time vs R with the cost model"),
    "fig_f_coverage.png": ("the coverage analysis", "(f) coverage rho(R) of the hot set"),
    "fig_d_exchange.png": ("the ring schedule (+40.8%)", "(d) ring vs all-to-all exchange"),
    "fig_g_breakdown.png": ("the time breakdown", "(g) a train step's time per stage"),
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="minutes on 2 CPU cores (< 20)")
    g.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute (CI)")
    p.add_argument("--devices", type=int, default=None,
                   help="fake CPU devices (default 8; --smoke: 2)")
    p.add_argument("--results", default=None)
    p.add_argument("--skip", default="", help="comma-separated steps not to run (e.g. "
                                              "scaling_processes: the figure then lacks them)")
    args = p.parse_args(argv)
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    args.devices = args.devices or (2 if args.smoke else 8)
    suffix = "" if args.size == "full" else f"-{args.size}"
    args.results = pathlib.Path(args.results or HERE / "results" / f"reproduce{suffix}")
    return args


def steps(args) -> list[tuple[str, list[str]]]:
    """(name, argv after ``python -m``) of each step, in order."""
    size = [] if args.size == "full" else [f"--{args.size}"]
    res, figs = args.results, str(args.results / "figures")
    dev = ["--devices", str(args.devices)]
    e2e = {w: str(res / f"end_to_end_{w}.jsonl") for w in WORKLOADS[args.size]}
    run = [(f"end_to_end_{w}", ["experiments.end_to_end", *size, *dev, "--workloads", w,
                                "--out", path, "--figures", figs]) for w, path in e2e.items()]
    run += [("end_to_end_figures", ["experiments.end_to_end_figures", *e2e.values(),
                                    "--figures", figs]),
            ("scaling_processes", ["experiments.scaling_processes", *size, *dev,
                                   "--out", str(res / "scaling_processes.jsonl")]),
            ("scaling", ["experiments.scaling", *size, *dev, "--out", str(res / "scaling.jsonl"),
                         "--end-to-end", e2e["criteo"], "--figures", figs,
                         "--processes-run", str(res / "scaling_processes.jsonl")]),
            ("projection", ["experiments.projection", *e2e.values(), str(res / "scaling.jsonl"),
                            "--out", str(res / "projection.jsonl"), "--figures", figs,
                            *(["--batch-per-gpu", "512", "--workloads", "criteo"]
                              if args.smoke else [])]),
            ("bench_index", ["experiments.bench_index", *size, "--out",
                             str(res / "bench_index.jsonl"), "--figures", figs])]
    fresh = {k: res / f"bench_{k}.jsonl" for k in COMMITTED}
    if args.smoke:  # the micro-benchmarks' committed quick runs
        fresh = dict(COMMITTED)
    else:
        run.append(("bench_pipeline", ["experiments.bench_pipeline", *size, *dev,
                                       "--out", str(fresh["pipeline"]),
                                       "--trace-dir", str(res / "trace")]))
    if args.size == "full":
        run += [("bench_replication", ["experiments.bench_replication", *dev,
                                       "--out", str(fresh["replication"])]),
                ("bench_exchange", ["experiments.bench_exchange", *dev,
                                    "--out", str(fresh["exchange"])])]
    else:  # 5.5 and 5 more minutes: past the quick budget
        fresh["replication"], fresh["exchange"] = COMMITTED["replication"], COMMITTED["exchange"]
    return run + [("replication_figures", ["experiments.replication_figures",
                                           str(fresh["replication"]), "--figures", figs]),
                  ("micro_figures", ["experiments.micro_figures",
                                     "--exchange", str(fresh["exchange"]),
                                     "--pipeline", str(fresh["pipeline"]), "--figures", figs])]


def run_step(name: str, argv: list[str], log: pathlib.Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", *argv], stdout=f, stderr=subprocess.STDOUT,
                            cwd=HERE.parent).returncode
    seconds = time.perf_counter() - t0
    print(f"reproduce: {name} exit {rc} in {seconds:.0f} s (log {log})", file=sys.stderr,
          flush=True)
    return dict(step=name, rc=rc, seconds=round(seconds, 1), log=log.name)


def _last(path: pathlib.Path, bench: str) -> dict:
    from experiments.figures import first, read_jsonl

    return first(read_jsonl(path)[::-1], bench)


def summarize(args, plan: list[tuple[str, list[str]]], ran: list[dict], total_s: float) -> dict:
    e2e = [_last(args.results / f"end_to_end_{w}.jsonl", "end_to_end_summary")
           for w in WORKLOADS[args.size]]
    merged = {k: {w: v for r in e2e for w, v in r.get(k, {}).items()}
              for k in ("samples_per_s", "speedup_vs_torchrec_style",
                        "paper_speedup_vs_torchrec")}
    rep_file = [c[1] for name, c in plan if name == "replication_figures"][0]
    rep = _last(pathlib.Path(rep_file), "replication_summary")
    proj = _last(args.results / "projection.jsonl", "projection_summary")
    figures = sorted(p.name for p in (args.results / "figures").glob("*.png"))
    return {"bench": "reproduce_summary", "size": args.size, "devices": args.devices,
            "speedup_vs_torchrec_style": {w: v.get("hypereca") for w, v in
                                          merged["speedup_vs_torchrec_style"].items()},
            "projection_error": proj.get("projection_error"),
            "goals": {"speedup_vs_torchrec_style": {"criteo": 2.0, "taobao": 1.5},
                      "projection_error": 0.15},
            "samples_per_s": merged["samples_per_s"],
            "paper_speedup_vs_torchrec": merged["paper_speedup_vs_torchrec"],
            "projected_speedup_vs_torchrec_style": proj.get(
                "projected_speedup_vs_torchrec_style", {}),
            "projected_m_samples_per_s": proj.get("projected_m_samples_per_s", {}),
            "replication": {k: rep[k] for k in ("bytes_removed", "model_r2", "chosen_vs_best",
                                                "projected_speedup_vs_r0") if k in rep},
            "steps": ran, "total_s": round(total_s, 1), "figures": figures,
            "plotted_from_committed_runs": sorted(
                k for k, path in COMMITTED.items()
                if any(str(path) in " ".join(cmd) for _, cmd in plan)),
            "index": "index.html", "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_index(args, summary: dict) -> pathlib.Path:
    """index.html: every figure with the paper figure it mirrors, then the summary."""
    parts = ["<!doctype html><meta charset='utf-8'><title>jax_hypereca: the paper's figures"
             "</title><body style='font-family:sans-serif;max-width:1300px'>",
             f"<h1>jax_hypereca: the paper's figures ({html.escape(args.size)}, "
             f"{args.devices} devices)</h1>",
             "<p>Written by <code>python -m experiments.reproduce</code>; what each figure "
             "measures and what it projects: experiments/README.md.</p>"]
    for name in summary["figures"]:
        paper, what = FIGURES.get(name, ("?", name))
        parts.append(f"<h2>{html.escape(what)}</h2><p>Paper: {html.escape(paper)}</p>"
                     f"<img src='figures/{html.escape(name)}' style='max-width:100%'>")
    parts.append("<h2>Summary</h2><pre>" + html.escape(json.dumps(summary, indent=1)) +
                 "</pre></body>")
    path = args.results / "index.html"
    path.write_text("\n".join(parts))
    return path


def main(argv=None) -> int:
    args = parse(argv)
    (args.results / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    skip = set(filter(None, args.skip.split(",")))
    unknown = skip - {name for name, _ in steps(args)}
    if unknown:
        raise SystemExit(f"--skip {','.join(sorted(unknown))}: no such step")
    plan = [(name, cmd) for name, cmd in steps(args) if name not in skip]
    ran = [run_step(name, cmd, args.results / f"{name}.log") for name, cmd in plan]
    summary = summarize(args, plan, ran, time.perf_counter() - t0)
    write_index(args, summary)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return 0 if all(r["rc"] == 0 for r in ran) else 1


if __name__ == "__main__":
    raise SystemExit(main())
