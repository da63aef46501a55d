"""Shared benchmark harness: timing, JSON lines, workload generators."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from typing import Any, Callable, TextIO

import jax
import numpy as np

from jax_hypereca import mix64
from jax_hypereca.data import zipf_ranks


class JsonLines:
    """Writes one JSON object per line to stdout and optionally to a file."""

    def __init__(self, path: str | None = None):
        self._file: TextIO | None = open(path, "w") if path else None
        self.records: list[dict[str, Any]] = []  # everything emitted, in order

    def emit(self, record: dict[str, Any]) -> dict[str, Any]:
        self.records.append(record)
        line = json.dumps(record, sort_keys=False)
        print(line, flush=True)
        if self._file:
            self._file.write(line + "\n")
            self._file.flush()
        return record

    def close(self):
        if self._file:
            self._file.close()


class Tagged:
    """Emits through `out` with fixed fields added to every record."""

    def __init__(self, out, **fields):
        self.out, self.fields = out, fields

    def emit(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.out.emit({**record, **self.fields})


class Silent:
    """An emitter that writes nothing (a process other than the one reporting)."""

    def emit(self, record: dict[str, Any]) -> dict[str, Any]:
        return record


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux: ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def release_memory(clear_caches: bool = True) -> None:
    """Give freed memory back before the next phase: collect reference cycles
    (a dropped collection's compiled steps), empty JAX's caches and return
    glibc's free heap pages to the system (without it, resident memory only
    ever grows across a benchmark's phases)."""
    import ctypes
    import gc

    gc.collect()
    if clear_caches:  # also drops compiled steps still in use (they recompile)
        jax.clear_caches()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    dev = jax.devices()[0]
    return {"bench": "environment", "platform": dev.platform,
            "device": getattr(dev, "device_kind", str(dev)), "num_devices": jax.device_count(),
            "jax": jax.__version__, "python": sys.version.split()[0],
            "machine": platform.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def time_fn(fn: Callable[[], Any], *, repeats: int, warmup: int = 1,
            calls: int = 1) -> dict[str, float]:
    """Median, min and max time per call of fn() after `warmup` untimed calls.

    Each of the `repeats` measurements runs fn() `calls` times back to back and
    blocks on the last result only: on an accelerator the calls queue up on the
    device stream, so with calls > 1 the time is the device's, not one Python
    dispatch plus a host round trip (chained state, e.g. donated tables, keeps
    the calls in order)."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(calls):
            out = fn()
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / calls)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats, "calls_per_repeat": calls}


def zipf_ids(n: int, num_ids: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` Zipf-like draws over `num_ids` possible ids: (ranks, ids). Rank 0 is
    the hottest; ids are the ranks scattered over int64 by the splitmix64
    bijection (so hot ids are not small integers)."""
    u = np.random.default_rng(seed).random(n)
    ranks = zipf_ranks(u, np.int64(num_ids), alpha).astype(np.int64)
    return ranks, ids_of_ranks(ranks)


def ids_of_ranks(ranks: np.ndarray) -> np.ndarray:
    """The id of each rank (a bijection; never a reserved value in practice)."""
    return mix64(np.asarray(ranks, np.int64).view(np.uint64)).view(np.int64)


class CompileCounter:
    """Counts XLA backend compilations in this process (every jit, every
    system), from JAX's monitoring events: ``count`` so far. A cache hit of
    the persistent compilation cache is not counted."""

    EVENT = "/jax/core/compile/backend_compile_duration"
    _instance: "CompileCounter | None" = None

    def __init__(self):
        self.count = 0

    @classmethod
    def get(cls) -> "CompileCounter":
        """The process's one counter (listeners cannot be removed)."""
        if cls._instance is None:
            cls._instance = cls()
            counter = cls._instance

            def listen(event: str, duration: float, **kw) -> None:
                if event == cls.EVENT:
                    counter.count += 1

            jax.monitoring.register_event_duration_secs_listener(listen)
        return cls._instance
