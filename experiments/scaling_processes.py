"""Figure (b)'s point over processes: the collection systems on one mesh of
--devices fake CPU devices split over --processes processes (jax.distributed
on 127.0.0.1), the same workload and global batch as figure (a)'s run on one
process, so the two differ only in the processes the mesh spans.

    python -m experiments.scaling_processes [--quick | --smoke] [--devices 8]
                                            [--processes 2] [--out FILE]

The launcher starts one worker per process and waits for them; every worker
trains the same systems (end_to_end.run_system: warm-up, timed rounds, the
median round that compiled nothing), process 0 writes the lines (``scaling``
records with ``mode: "processes"`` and ``processes``). Only the collection
systems run: the hashed-table ones put whole host arrays on the mesh, which
one process cannot do for another's devices. hypereca plans its hot fold for
the paper's cluster from the first global batches (every process the same
plan). Between processes the collectives cross TCP (gloo) on this machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

from experiments.scaling import SIZES

SYSTEMS = "hypereca,torchrec_style,hugectr_style"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="2 collection systems (about 2 min)")
    g.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices in all")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--systems", default=None, help=f"comma-separated (default {SYSTEMS}; "
                                                  "--quick and --smoke: the first two)")
    p.add_argument("--out", help="also write the JSON lines to this file")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--timeout-s", type=int, default=900)
    args = p.parse_args(argv)
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    for k, v in SIZES[args.size].items():
        setattr(args, k, v)
    args.systems = args.systems or (SYSTEMS if args.size == "full"
                                    else ",".join(SYSTEMS.split(",")[:2]))
    if args.devices % args.processes:
        raise SystemExit(f"--devices {args.devices} does not split over "
                         f"--processes {args.processes}")
    return args


def launch(args, argv) -> int:
    """One worker per process; their exit status (the first that failed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices // args.processes}"
    env["JAX_PLATFORMS"] = "cpu"
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.scaling_processes", *argv,
                               "--worker", str(i), "--port", str(port)], env=env,
                              stdout=None if i == 0 else subprocess.DEVNULL)
             for i in range(args.processes)]
    try:
        codes = [p.wait(timeout=args.timeout_s) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return next((c for c in codes if c), 0)


def work(args) -> int:
    import jax

    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                               num_processes=args.processes, process_id=args.worker)
    import jax_hypereca as h
    from experiments import baselines
    from experiments.end_to_end import run_system
    from experiments.harness import JsonLines, Silent, Tagged, environment, release_memory
    from experiments.workloads import workloads

    out = JsonLines(args.out) if args.worker == 0 else Silent()
    out.emit(environment())
    w = workloads(args.size)["criteo"]
    mesh = h.make_mesh(jax.devices())
    p = baselines.parts(w, mesh, profile="paper")
    for name in args.systems.split(","):
        run_system(name, p, args, Tagged(out, mode="processes", processes=args.processes),
                   bench="scaling")
        release_memory()
    if args.worker == 0:
        out.close()
    jax.distributed.shutdown()
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    return work(args) if args.worker is not None else launch(args, argv)


if __name__ == "__main__":
    raise SystemExit(main())
