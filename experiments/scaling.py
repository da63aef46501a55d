"""Figure (b): weak and strong scaling of the systems over 1, 2, 4 and 8 devices.

    python -m experiments.scaling [--quick | --smoke] [--devices 8] [--out FILE]
                                  [--figures DIR] [--systems a,b] [--modes weak,strong]
                                  [--end-to-end FILE]

Every point is one system trained on the Criteo-like workload (workloads.py)
on a mesh of the first n of --devices devices, with end_to_end.run_system
(warm-up, timed rounds, median round; the same code as figure (a)):

- weak: the per-device batch fixed at the workload's batch / --devices (512
  at 8 devices), so the global batch is 512 n;
- strong: the global batch fixed at the workload's batch (4096).

hypereca plans its hot fold for the paper's 32-GPU cluster (``--profile
paper``: the same plan on every mesh, no per-mesh profiling). With
``--end-to-end FILE`` the figure also draws figure (a)'s points (its mesh,
its batch) where they belong: weak scaling at --devices; with
``--processes-run FILE`` the same mesh split over processes
(scaling_processes.py).

On fake CPU devices every device shares this machine's cores, so the total
throughput cannot grow with n here: a perfectly scaling system shows a flat
line (samples/s per core fixed), communication shows as a fall. The cost
model of projection.py is fitted to these points (cores shared) and
projects to devices that are not shared. Lines: ``scaling`` per point (as
``end_to_end``, plus ``mode``), ``scaling_point`` per evaluation, and a
summary. Figure: fig_b_scaling.png.
"""

from __future__ import annotations

import dataclasses

from experiments.cli import mesh_bench_parser, use_fake_devices

SIZES = {"smoke": dict(steps=2, eval_every=2, warmup=2, eval_size=512, counts=(1,),
                       modes="weak"),
         "quick": dict(steps=8, eval_every=4, warmup=4, eval_size=4096, counts=(1, 2, 4),
                       modes="weak"),
         "full": dict(steps=40, eval_every=20, warmup=10, eval_size=16384,
                      counts=(1, 2, 4, 8), modes="weak,strong")}
QUICK_SYSTEMS = "hypereca,torchrec_style,data_parallel,naive_jax"


def parse(argv=None):
    p = mesh_bench_parser(__doc__, "weak scaling of 4 systems on 1, 2 and 4 devices "
                                   "(about 3 minutes)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    p.add_argument("--systems", default=None,
                   help=f"comma-separated (default all; --quick: {QUICK_SYSTEMS}; --smoke: "
                        "torchrec_style)")
    p.add_argument("--modes", default=None, help="weak,strong (default: the size's)")
    p.add_argument("--end-to-end", default=None, help="figure (a)'s JSON lines, drawn too")
    p.add_argument("--processes-run", default=None,
                   help="scaling_processes' JSON lines (the mesh over processes), drawn too")
    p.add_argument("--figures", default="experiments/results/figures")
    args = p.parse_args(argv)
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    for k, v in SIZES[args.size].items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    if args.systems is None and args.size != "full":  # smoke (CI): one, for the figure
        args.systems = QUICK_SYSTEMS if args.size == "quick" else "torchrec_style"
    args.profile, args.profile_cache = "paper", None  # run_system's parts
    return args


def point_workload(w, mode: str, n: int, devices: int):
    """The workload at one point: weak keeps batch / devices per device."""
    batch = w.batch // devices * n if mode == "weak" else w.batch
    return dataclasses.replace(w, batch=batch)


def main(argv=None) -> int:
    args = parse(argv)
    use_fake_devices(args.devices)
    import jax

    import jax_hypereca as h
    from experiments import baselines, scaling_figures
    from experiments.end_to_end import run_system
    from experiments.figures import read_jsonl
    from experiments.harness import (JsonLines, Tagged, environment, peak_rss_mb,
                                     release_memory)
    from experiments.workloads import workloads

    out = JsonLines(args.out)
    out.emit(environment())
    w = workloads(args.size)["criteo"]
    names = args.systems.split(",") if args.systems else list(baselines.SYSTEMS)
    out.emit(dict(bench="scaling_workload", devices=args.devices, size=args.size,
                  steps=args.steps, warmup=args.warmup, hypereca_profile=args.profile,
                  **w.describe()))
    runs = []
    for mode in args.modes.split(","):
        for n in args.counts:
            if n > args.devices:
                continue
            mesh = h.make_mesh(jax.devices()[:n])
            p = baselines.parts(point_workload(w, mode, n, args.devices), mesh, profile="paper")
            for name in names:
                r = run_system(name, p, args, Tagged(out, mode=mode), bench="scaling")
                runs.append(r)
                release_memory()
    e2e = [r for r in read_jsonl(args.end_to_end) if r.get("bench") == "end_to_end"
           and r.get("workload") == w.name] if args.end_to_end else []
    procs = [r for r in read_jsonl(args.processes_run) if r.get("bench") == "scaling"
             ] if args.processes_run else []
    figures = scaling_figures.plot(out.records, e2e, args.figures, procs)
    out.emit(dict(bench="scaling_summary", samples_per_s={
        f"{r['mode']}/{r['system']}/{r['devices']}": round(r["samples_per_s"], 1)
        for r in runs}, figures=figures, peak_rss_mb=peak_rss_mb()))
    out.close()
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
