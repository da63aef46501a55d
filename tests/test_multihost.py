"""The collection across 2 processes x 4 CPU devices (jax.distributed on
127.0.0.1) equals the single-device reference (I2), with the cold fold only
and with hot folds planned, applied and re-planned across the processes;
the exchange picked by measurement agrees across them, the ring exchange
equals the all-to-all bit for bit, admission counts across them, and (with
HYPERECA_SLOW_TESTS=1) a host tier spans them, each process holding its own
shards' rows."""

import os
import pathlib
import socket
import subprocess
import sys

from conftest import slow_case

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(steps: int, mode: str = "all") -> list[str]:
    """The worker in 2 processes; their outputs (each asserted to exit 0)."""
    port = free_port()
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(port), "2", str(pid), str(steps),
                               mode], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) for pid in range(2)]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
    for pid, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {pid} failed:\n{out[-4000:]}"
    return outs


def test_two_processes_equal_the_reference():
    steps = 16
    for pid, out in enumerate(run_workers(steps)):
        assert f"process {pid}: OK {steps} steps" in out, out[-4000:]
        assert f"process {pid}: OK hot folds" in out, out[-4000:]
        assert f"process {pid}: OK ring equals all_to_all bit for bit" in out, out[-4000:]
        assert f"process {pid}: OK admission" in out, out[-4000:]


@slow_case  # a further case: the host tier's single-process paths run in test_tiers
def test_two_processes_share_a_host_tier():
    for pid, out in enumerate(run_workers(16, "tier")):
        assert f"process {pid}: OK host tier" in out, out[-4000:]
