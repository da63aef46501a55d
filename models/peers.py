"""Several training processes: a lost peer found within ``--peer-timeout-s``
and reported as one clear error line and exit status 2, not a hang or a C++
abort.

A process that dies (SIGKILL, OOM, a lost host) shows up in one of two ways:

* a collective of the survivors fails at once (Gloo: ``Connection closed by
  peer``): the train command catches the ``JaxRuntimeError`` (``main``);
* nothing fails and the survivors wait in a collective: :class:`PeerWatch`,
  two threads per process, publishes a heartbeat counter in the coordination
  service's key-value store and declares a peer lost when its counter has not
  moved for ``--peer-timeout-s`` seconds (or the coordinator, process 0, when
  the store itself does not answer for that long).

Either way the survivor prints ``error: lost contact with process N ...`` and
leaves with ``os._exit(LOST_PEER_EXIT)``: a normal exit would run
``jax.distributed.shutdown``, which waits for the lost peer.  JAX's own
heartbeat timeout (which aborts the process with a stack trace, and whose
callback cannot be set from Python in jax 0.10) is set to twice
``--peer-timeout-s``, as a backstop.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable

import jax

LOST_PEER_EXIT = 2
# Text of the errors a lost peer causes (collectives, coordination service).
_LOST_PEER_MARKERS = ("Gloo", "closed by peer", "reset by peer", "heartbeat",
                      "CoordinationService", "coordination service")


def lost_peer_message(lost: list[int], reason: str, *, process_id: int, num_processes: int,
                      peer_timeout_s: int) -> str:
    """``error: lost contact with process N ...``: who, why, the setting, what to do.
    ``lost`` empty: unknown (with two processes, the other one)."""
    if not lost and num_processes == 2:
        lost = [1 - process_id]
    who = ("process " + ", ".join(map(str, lost)) if lost
           else "another process (the error does not say which)")
    lines = reason.strip().splitlines()
    reason = lines[0] if lines else "no detail"
    if len(reason) > 300:
        reason = reason[:300] + "..."
    return (f"error: lost contact with {who} of {num_processes} (this is process "
            f"{process_id}): {reason}. A process that stops answering is declared lost "
            f"after --peer-timeout-s {peer_timeout_s} s. Restart every process, with --resume "
            f"to continue from the last checkpoint in --checkpoint-dir.")


def is_lost_peer_error(error: BaseException) -> bool:
    """Whether ``error`` (from a step of a multi-process run) is a lost peer."""
    text = str(error)
    return isinstance(error, jax.errors.JaxRuntimeError) and any(
        marker in text for marker in _LOST_PEER_MARKERS)


def exit_lost_peer(lost: list[int], reason: str, *, process_id: int, num_processes: int,
                   peer_timeout_s: int) -> None:
    """Prints the lost-peer error and ends the process now (no atexit handlers)."""
    print(lost_peer_message(lost, reason, process_id=process_id, num_processes=num_processes,
                            peer_timeout_s=peer_timeout_s), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(LOST_PEER_EXIT)


class PeerWatch:
    """Heartbeats through the coordination service's key-value store.

    A beat thread sets ``hypereca/alive/<process>`` to a counter every
    ``interval`` seconds and reads the others'; a judge thread (which never
    blocks on the network) calls ``on_lost(processes, reason)`` once a peer's
    counter has not moved for ``timeout_s``, or once the store has not
    answered for ``timeout_s`` (the coordinator, process 0, is lost).  A
    process that finished marks itself ``done`` (:meth:`stop`) and is no longer
    watched.
    """

    def __init__(self, client, *, process_id: int, num_processes: int, timeout_s: float,
                 on_lost: Callable[[list[int], str], None]):
        self._client, self._pid, self._timeout = client, process_id, timeout_s
        self._peers = [q for q in range(num_processes) if q != process_id]
        self._on_lost = on_lost
        self.interval = min(2.0, max(0.1, timeout_s / 10))
        now = time.monotonic()
        self._seen = {q: now for q in self._peers}
        self._values: dict[int, str] = {}
        self._done: set[int] = set()
        self._answered, self._error = now, ""
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=fn, name=f"peer-watch-{fn.__name__}", daemon=True)
                         for fn in (self._beat, self._judge)]

    @staticmethod
    def _key(process: int) -> str:
        return f"hypereca/alive/{process}"

    def start(self) -> PeerWatch:
        for thread in self._threads:
            thread.start()
        return self

    def _beat(self) -> None:
        beat = 0
        while not self._stopped.is_set():
            beat += 1
            try:
                self._client.key_value_set(self._key(self._pid), str(beat), allow_overwrite=True)
                for q in self._peers:
                    self._read(q)
                self._answered = time.monotonic()
            except Exception as e:  # the store does not answer: the judge decides
                self._error = str(e)
            self._stopped.wait(self.interval)

    def _read(self, q: int) -> None:
        try:
            value = self._client.key_value_try_get(self._key(q))
        except Exception as e:
            if "NOT_FOUND" in str(e):
                return  # not started beating yet
            raise
        if value == "done":
            self._done.add(q)
        elif value != self._values.get(q):
            self._values[q], self._seen[q] = value, time.monotonic()

    def _judge(self) -> None:
        while not self._stopped.wait(self.interval):
            now = time.monotonic()
            if now - self._answered > self._timeout:
                self._on_lost([0] if self._pid else [], f"the coordination service (process 0) "
                              f"has not answered for {now - self._answered:.0f} s: {self._error}")
                return
            stale = [q for q in self._peers
                     if q not in self._done and now - self._seen[q] > self._timeout]
            if stale:
                self._on_lost(stale, f"no heartbeat for {now - min(self._seen[q] for q in stale):.0f} s")
                return

    def stop(self) -> None:
        """Stops watching and tells the others this process finished."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with contextlib.suppress(Exception):
            self._client.key_value_set(self._key(self._pid), "done", allow_overwrite=True)


_watch: PeerWatch | None = None


def initialize(*, coordinator: str, bind: str, num_processes: int, process_id: int,
               peer_timeout_s: int) -> None:
    """``jax.distributed.initialize``, then a :class:`PeerWatch` that ends this
    process with a clear error when a peer is lost for ``peer_timeout_s``.

    Process 0's coordination service listens on ``bind`` only (jax's default
    is every interface, ``[::]:port``): it has no authentication, so it
    belongs on the address of a private network."""
    global _watch
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, coordinator_bind_address=bind,
                               heartbeat_timeout_seconds=2 * peer_timeout_s)
    from jax._src import distributed  # the connected client (no public accessor)

    def on_lost(lost: list[int], reason: str) -> None:
        exit_lost_peer(lost, reason, process_id=process_id, num_processes=num_processes,
                       peer_timeout_s=peer_timeout_s)

    _watch = PeerWatch(distributed.global_state.client, process_id=process_id,
                       num_processes=num_processes, timeout_s=peer_timeout_s,
                       on_lost=on_lost).start()


def stop_watch() -> None:
    """Stops the watch (before a normal shutdown or an error exit)."""
    if _watch is not None:
        _watch.stop()
