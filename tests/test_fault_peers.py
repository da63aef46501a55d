"""A lost training process: one of two `models.train` processes (loopback
coordinator) is killed or frozen mid-run; the survivor exits with status 2
within 60 s and an error naming the lost process and --peer-timeout-s.

Bounded: every wait has a deadline, and a finally kills what the test started."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from models import peers

REPO = pathlib.Path(__file__).resolve().parents[1]
SLOW = os.environ.get("HYPERECA_SLOW_TESTS") == "1"
PEER_TIMEOUT_S = 3
# Dense-only, one device per process: the collectives (gradient all-reduce)
# that a lost peer breaks, at a few seconds of start-up.
ARGS = ["--preset", "tiny", "--dense-only", "--bottom-mlp", "16", "--top-mlp", "8",
        "--batch", "64", "--steps", "100000", "--eval-every", "100000", "--eval-size", "64",
        "--log-every", "1", "--devices", "2", "--num-processes", "2", "--no-progress",
        "--peer-timeout-s", str(PEER_TIMEOUT_S)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pair(tmp_path: pathlib.Path) -> list[subprocess.Popen]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the command gives each process its one CPU device
    command = [sys.executable, "-m", "models.train", *ARGS, "--output-dir", str(tmp_path / "out"),
               "--coordinator", f"127.0.0.1:{_free_port()}"]
    return [subprocess.Popen(command + ["--process-id", str(i)], cwd=REPO, env=env,
                             stdout=open(tmp_path / f"p{i}.log", "w"), stderr=subprocess.STDOUT)
            for i in range(2)]


def _wait_for_training(procs, tmp_path: pathlib.Path, timeout_s: float = 240) -> None:
    """Until the first train record is in the metrics (both processes stepping)."""
    metrics, deadline = tmp_path / "out" / "metrics.jsonl", time.monotonic() + timeout_s
    while not (metrics.exists() and '"train"' in metrics.read_text()):
        for i, p in enumerate(procs):
            assert p.poll() is None, f"process {i} ended early:\n" + \
                (tmp_path / f"p{i}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the processes did not start training"
        time.sleep(0.05)


def _kill_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()  # SIGKILL also ends a SIGSTOPped process
        p.wait(timeout=30)


@pytest.mark.faults
@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGSTOP, marks=pytest.mark.skipif(
    not SLOW, reason="slow; the watch itself is tested in-process below; HYPERECA_SLOW_TESTS=1"))],
    ids=["killed", "frozen"])
def test_the_survivor_of_a_lost_process_exits_naming_it(tmp_path, sig):
    """SIGKILL: the survivor's next all-reduce fails at once (Gloo: connection
    reset) or its watch sees no heartbeat; SIGSTOP (a hung process, sockets
    open): only the heartbeat watch can tell, after --peer-timeout-s."""
    procs = _start_pair(tmp_path)
    try:
        _wait_for_training(procs, tmp_path)
        lost_at = time.monotonic()
        os.kill(procs[1].pid, sig)
        status = procs[0].wait(timeout=60)
        waited = time.monotonic() - lost_at
    finally:
        _kill_all(procs)
    log = (tmp_path / "p0.log").read_text()
    assert status == peers.LOST_PEER_EXIT, log[-3000:]
    assert waited < 60
    (line,) = [line for line in log.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: lost contact with process 1 of 2 (this is process 0): ")
    assert f"--peer-timeout-s {PEER_TIMEOUT_S} s" in line
    if sig == signal.SIGSTOP:
        assert f"no heartbeat for {PEER_TIMEOUT_S}" in line
        assert PEER_TIMEOUT_S <= waited < PEER_TIMEOUT_S + 10


def test_lost_peer_message_names_the_process_and_the_setting():
    msg = peers.lost_peer_message([3], "no heartbeat for 30 s\nmore", process_id=0,
                                  num_processes=4, peer_timeout_s=30)
    assert msg.startswith("error: lost contact with process 3 of 4 (this is process 0): "
                          "no heartbeat for 30 s. ")
    assert "--peer-timeout-s 30 s" in msg and "--resume" in msg
    assert "lost contact with process 0 of 2" in peers.lost_peer_message(
        [], "Gloo all-reduce failed", process_id=1, num_processes=2, peer_timeout_s=5)
    assert "another process (the error does not say which)" in peers.lost_peer_message(
        [], "x" * 1000, process_id=1, num_processes=3, peer_timeout_s=5)


def _in_parallel(fns, timeout_s: float = 30) -> None:
    threads = [threading.Thread(target=fn, daemon=True) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)


@pytest.mark.faults
def test_the_watch_names_a_silent_peer_and_not_one_that_finished():
    """Three clients of a real coordination service (loopback) in this
    process: process 2 finishes (stop: marked done), process 1 falls silent
    (its beats stop, as in a frozen process): process 0's watch names 1 only,
    within its timeout."""
    from jax._src.lib import _jax  # the service and clients jax.distributed uses
    address = f"127.0.0.1:{_free_port()}"
    service = _jax.get_distributed_runtime_service(address, 3, heartbeat_timeout=60)
    clients = [_jax.get_distributed_runtime_client(address, i, init_timeout=30,
                                                   heartbeat_timeout=60) for i in range(3)]
    _in_parallel([c.connect for c in clients])
    reports, lost = [], threading.Event()

    def on_lost(process_id):
        def report(processes, reason):
            reports.append((process_id, processes, reason))
            lost.set()
        return report
    watches = [peers.PeerWatch(c, process_id=i, num_processes=3, timeout_s=2.0,
                               on_lost=on_lost(i)).start() for i, c in enumerate(clients)]
    try:
        time.sleep(2.5)
        assert reports == []  # all beating, past the timeout
        watches[2].stop()
        watches[1]._stopped.set()  # silent, not done
        silent_at = time.monotonic()
        assert lost.wait(10)
        waited = time.monotonic() - silent_at
    finally:
        for w in watches:
            w.stop()
        _in_parallel([c.shutdown for c in clients])
        service.shutdown()
    assert reports[0][:2] == (0, [1]) and reports[0][2].startswith("no heartbeat for ")
    assert 2.0 <= waited < 2.0 + 2 * watches[0].interval + 1
