"""Throughput of the host tier's native store (jax_hypereca.HostStore).

    python -m experiments.bench_host_store [--quick] [--out FILE]

A store of --resident rows (default 1M; dim 64 float32, state width 1 as
row-wise Adagrad: 288-byte records) is filled once per thread count (1 and
2). Then, repeated, on batches of --batch distinct resident ids drawn
uniformly (stage A deduplicates its ids, so a call holds no duplicates):
``take`` (promotion: rows copied out and removed, every id a hit), ``put``
of the same rows back (demotion into the holes the take left; no growth),
``peek`` (rows copied, nothing removed), ``contains`` (index only) and
``take_half_miss`` (half the ids absent, as new ids are). All through the
public Python class, GIL and argument checks included. Then ``stage``: the
host tier's stager (``HostStager.collect`` + ``pack``: 26 tables' lookups,
owner routing, sorting, packing) on batches shaped like bench_tiers --quick's
20% budget (STAGE_*), per thread count, STAGE_BATCHES batches after
STAGE_WARMUP -- the native part of a step's staging on a machine with
nothing else running (bench_tiers measures it inside training).

One JSON line per (op, threads) with the median and best keys/s over the
repeats; the last line is the summary with ``host_lookup_keys_per_s``: the
median take (all hits) keys/s at the best thread count (issue 14's goal:
>= 20M keys/s on 2 cores). ``--quick``: 1M rows, 8 repeats, well under a
minute and about 0.7 GB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from experiments.harness import JsonLines, environment
from jax_hypereca import HostStager, HostStore, packed_tables, put_packed

OPS = ("take", "put", "peek", "contains", "take_half_miss")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 repeats (under a minute, < 1 GB)")
    p.add_argument("--out", help="also write the JSON lines to this file")
    p.add_argument("--resident", type=int, default=1_000_000, help="rows in the store")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--state-width", type=int, default=1)
    p.add_argument("--batch", type=int, default=65_536, help="ids per call")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    args.repeats = args.repeats or (8 if args.quick else 30)
    return args


def fill(args, threads: int, keys: np.ndarray, values: np.ndarray) -> tuple[HostStore, float]:
    """A store holding every key; returns it and the fill rate (keys/s)."""
    store = HostStore(args.dim, args.state_width, threads=threads)
    n = keys.shape[0]
    state = np.zeros((n, args.state_width), np.float32)
    steps = np.zeros(n, np.int64)
    t0 = time.perf_counter()
    store.put(keys, values, state, steps, steps)
    return store, n / (time.perf_counter() - t0)


def time_ops(store: HostStore, keys: np.ndarray, absent: np.ndarray, args,
             rng: np.random.Generator) -> dict[str, list[float]]:
    """Seconds per call of each op, one list per op, over the repeats."""
    times: dict[str, list[float]] = {op: [] for op in OPS}

    def timed(op, fn):
        t0 = time.perf_counter()
        out = fn()
        times[op].append(time.perf_counter() - t0)
        return out

    b = args.batch
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        batch = keys[rng.choice(keys.shape[0], b, replace=False)]
        mixed = np.concatenate([batch[: b // 2], absent[rng.choice(absent.shape[0], b - b // 2)]])
        timed("peek", lambda: store.peek(batch))
        timed("contains", lambda: store.contains(batch))
        found, rows = timed("take", lambda: store.take(batch))
        assert found.all()
        timed("put", lambda: store.put_rows(rows))
        found, rows = timed("take_half_miss", lambda: store.take(mixed))
        store.put_rows(rows._replace(keys=mixed[found])._replace(
            values=rows.values[found], opt_state=rows.opt_state[found],
            last_step=rows.last_step[found], freq=rows.freq[found]))
    return {op: t[1:] for op, t in times.items()}


# The stage measurement's shape: bench_tiers --quick's 20% budget (26 tables,
# ~23k distinct ids per batch, host stores of ~8k rows each, 16% of the ids
# found there, 8 owner shards, dim 16 float32, row-wise Adagrad's 1 word).
STAGE_TABLES, STAGE_ROWS, STAGE_FOUND, STAGE_SHARDS, STAGE_DIM = 26, 8000, 0.16, 8, 16
# Batches of a stage measurement: warm-up (the first packs fault their pages
# in) and timed. A batch takes ~2 ms, so even --quick affords 40.
STAGE_WARMUP, STAGE_BATCHES = 5, 40


def time_stage(args, rng: np.random.Generator, threads: int) -> dict:
    """HostStager.collect + pack (take, then the rows put back untimed) of
    tier-shaped batches: keys looked up per second and ms per batch."""
    stores, pools = [], []
    for t in range(STAGE_TABLES):
        keys = np.unique(rng.integers(-(2**62), 2**62, STAGE_ROWS))
        n = keys.shape[0]
        store = HostStore(STAGE_DIM, 1, name=f"t{t}")
        store.put(keys, rng.random((n, STAGE_DIM), dtype=np.float32),
                  np.zeros((n, 1), np.float32), np.zeros(n, np.int64), np.ones(n, np.int64))
        stores.append(store)
        pools.append(keys)
    stager = HostStager(STAGE_DIM, 1, dtype="float32", num_shards=STAGE_SHARDS,
                        threads=threads)
    local = np.ones(STAGE_SHARDS, bool)
    seconds, looked_up = [], 0
    for r in range(STAGE_WARMUP + STAGE_BATCHES):
        ids = []
        for pool in pools:
            k = int(rng.integers(100, 1700))
            found = rng.choice(pool, int(k * STAGE_FOUND), replace=False)
            ids.append(np.unique(np.concatenate([found, rng.integers(-(2**62), 2**62, k)])))
        t0 = time.perf_counter()
        most = stager.collect(stores, ids, take=True, local=local)
        rows = stager.pack(max(most, 1))
        if r >= STAGE_WARMUP:
            seconds.append(time.perf_counter() - t0)
            looked_up += stager.looked_up
        put_packed(stores, rows, packed_tables(rows.keys, STAGE_SHARDS, STAGE_TABLES))
    total = sum(seconds)
    return {"keys_per_s": looked_up / total, "ms_per_batch": 1e3 * total / len(seconds),
            "median_ms_per_batch": 1e3 * statistics.median(seconds),
            "keys_per_batch": looked_up / len(seconds), "batches": len(seconds)}


def main(argv=None) -> dict:
    args = parse(argv)
    out = JsonLines(args.out)
    out.emit({**environment(), "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]})
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(-(2**62), 2**62, args.resident + args.resident // 50))
    keys = rng.permutation(keys)
    keys, absent = keys[: args.resident], keys[args.resident:]
    values = rng.random((keys.shape[0], args.dim), dtype=np.float32)
    config = {"resident": int(keys.shape[0]), "dim": args.dim, "dtype": "float32",
              "state_width": args.state_width, "batch": args.batch, "repeats": args.repeats}
    take_by_threads = {}
    for threads in args.threads:
        store, fill_rate = fill(args, threads, keys, values)
        out.emit({"bench": "host_store", "op": "fill", "threads": threads, **config,
                  "keys_per_s": fill_rate, "bytes": store.bytes, "units": "keys/s"})
        times = time_ops(store, keys, absent, args, rng)
        for op in OPS:
            med, best = statistics.median(times[op]), min(times[op])
            rec = out.emit({"bench": "host_store", "op": op, "threads": threads, **config,
                            "keys_per_s": args.batch / med, "best_keys_per_s": args.batch / best,
                            "median_ms": med * 1e3, "units": "keys/s",
                            "bytes_per_key": store.bytes / len(store)})
            if op == "take":
                take_by_threads[threads] = rec["keys_per_s"]
        del store
    stage_by_threads = {}
    for threads in args.threads:
        rec = out.emit({"bench": "host_store", "op": "stage", "threads": threads,
                        "tables": STAGE_TABLES, "rows_per_store": STAGE_ROWS,
                        "found_share": STAGE_FOUND, "shards": STAGE_SHARDS, "dim": STAGE_DIM,
                        "warmup_batches": STAGE_WARMUP, "units": "keys/s",
                        **time_stage(args, rng, threads)})
        stage_by_threads[threads] = rec["keys_per_s"]
    best_threads = max(take_by_threads, key=take_by_threads.get)
    summary = out.emit({"bench": "summary", "host_lookup_keys_per_s": take_by_threads[best_threads],
                        "threads": best_threads, "take_keys_per_s_by_threads": take_by_threads,
                        "stage_keys_per_s_by_threads": stage_by_threads,
                        "goal_keys_per_s": 20e6, "units": "keys/s",
                        "loadavg_1m_end": os.getloadavg()[0], **config})
    out.close()
    return summary


if __name__ == "__main__":
    main()
