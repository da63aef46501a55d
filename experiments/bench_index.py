"""Figure (c): index throughput. The batched index a train step runs (stage
B: one ``find_slots`` call over a batch's ids, overlapped with the previous
step's dense work by the pipeline) against a single-lock index serving
requests and against plain hashing, all measured in this process.

    python -m experiments.bench_index [--quick | --smoke] [--out FILE] [--figures DIR]

Every index holds the same ``--rows`` ids (the hottest of a Zipf alpha 1.05
draw) and answers the same queries (Zipf draws over twice as many ids:
some miss), keys/s of the median of the repeats:

- ``batched_index``: this library's table (one shard, load 0.5), slots of
  ``--keys`` ids per ``find_slots`` call (the custom call stage B runs);
- ``single_lock_requests``: the host tier's native store (open addressing,
  one mutex per store, GIL released in every call) queried with
  ``contains`` one request at a time: a request is one sample's 26 ids, as a
  parameter server serving per-sample lookups; 1 and 2 client threads;
- ``single_lock_batched``: the same store, one call per ``--keys`` ids (the
  lock taken once per batch);
- ``hashing``: the hashing trick (id mod rows, numpy): no index at all,
  collisions share a row; the ceiling an index is measured against.

Lines: one per (index, threads) with keys/s and samples/s (26 ids per
sample), then the summary with ``batched_vs_single_lock`` (the paper's
pipelined index: 8.26x over a locked index). Figure: fig_c_index.png.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

IDS_PER_SAMPLE = 26
LABELS = {"batched_index": "batched index (stage B's op)",
          "single_lock_batched": "single lock, one call per batch",
          "single_lock_requests": "single lock, one call per sample",
          "hashing": "hashing trick (no index)"}
SIZES = {"smoke": dict(rows=1 << 14, keys=1 << 14, repeats=3),
         "quick": dict(rows=1 << 20, keys=1 << 20, repeats=5),
         "full": dict(rows=1 << 22, keys=1 << 20, repeats=10)}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="1M rows, 1M keys (about 30 s)")
    g.add_argument("--smoke", action="store_true", help="tiny sizes, seconds (CI)")
    p.add_argument("--out", help="also write the JSON lines to this file")
    p.add_argument("--figures", default="experiments/results/figures")
    args = p.parse_args(argv)
    args.size = "smoke" if args.smoke else "quick" if args.quick else "full"
    for k, v in SIZES[args.size].items():
        setattr(args, k, v)
    return args


def _median_s(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batched_index(rows: int, queries: np.ndarray, repeats: int) -> float:
    """Seconds of one find_slots call over `queries` on a table holding `rows` ids."""
    import jax

    import jax_hypereca as h
    from experiments.bench_ops import _find_slots, fill, make_spec

    spec = make_spec(2 * rows, 8)
    state, _ = fill(spec, 0.5, min(rows, 1 << 16))
    q = h.ids_array(queries)
    return _median_s(lambda: jax.block_until_ready(_find_slots(spec, state, q)), repeats)


def host_store(rows: int):
    import jax_hypereca as h
    from experiments.harness import ids_of_ranks

    store = h.HostStore(8, 0, name="index")
    keys = ids_of_ranks(np.arange(rows))
    for chunk in np.array_split(keys, max(1, rows >> 16)):
        store.put(chunk, np.zeros((chunk.size, 8), np.float32), np.zeros((chunk.size, 0),
                  np.float32), np.zeros(chunk.size, np.int64), np.zeros(chunk.size, np.int64))
    return store


def single_lock_requests(store, queries: np.ndarray, threads: int, repeats: int) -> float:
    """Seconds to answer `queries` as requests of one sample's ids from `threads` clients."""
    requests = np.array_split(queries, max(1, queries.size // IDS_PER_SAMPLE))

    def client(mine):
        for r in mine:
            store.contains(r)

    def run():
        workers = [threading.Thread(target=client, args=(requests[t::threads],))
                   for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return _median_s(run, repeats)


def main(argv=None) -> int:
    args = parse(argv)
    from experiments.figures import pyplot, save
    from experiments.harness import JsonLines, environment, zipf_ids

    out = JsonLines(args.out)
    env = out.emit(environment())
    _, queries = zipf_ids(args.keys, 2 * args.rows, 1.05, seed=3)
    store = host_store(args.rows)
    hashed = lambda: (queries.view(np.uint64) % np.uint64(args.rows)).astype(np.int32)  # noqa
    timings = [("batched_index", 1, batched_index(args.rows, queries, args.repeats)),
               ("single_lock_batched", 1, _median_s(lambda: store.contains(queries),
                                                     args.repeats)),
               *[("single_lock_requests", t, single_lock_requests(store, queries, t,
                                                                  args.repeats))
                 for t in (1, 2)],
               ("hashing", 1, _median_s(hashed, args.repeats))]
    rates = {}
    for name, threads, seconds in timings:
        rates[f"{name}/{threads}"] = args.keys / seconds
        out.emit(dict(bench="index", index=name, threads=threads, rows=args.rows,
                      keys=args.keys, seconds=seconds, keys_per_s=args.keys / seconds,
                      samples_per_s=args.keys / seconds / IDS_PER_SAMPLE))
    locked = max(v for k, v in rates.items() if k.startswith("single_lock_requests"))
    summary = dict(bench="index_summary", size=args.size,
                   batched_vs_single_lock=rates["batched_index/1"] / locked,
                   batched_vs_hashing=rates["batched_index/1"] / rates["hashing/1"],
                   paper_pipelined_vs_locked=8.26, keys_per_s=rates)
    summary["figures"] = [plot(pyplot(), save, rates, args, env)]
    out.emit(summary)
    out.close()
    return 0


def plot(plt, save, rates: dict, args, env: dict) -> str:
    import pathlib

    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(rates)
    ys = [rates[k] / 1e6 for k in names]
    ax.barh(range(len(names)), ys, color=[f"C{i}" for i in range(len(names))])
    for i, y in enumerate(ys):
        ax.text(y, i, f" {y:.1f}M ({y / IDS_PER_SAMPLE:.2f}M samples/s)", va="center",
                fontsize=8)
    ax.set_yticks(range(len(names)), [LABELS[n.split("/")[0]] + (
        f", {n.split('/')[1]} threads" if n.startswith("single_lock_requests") else "")
        for n in names], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(ys) / 2, max(ys) * 30)
    ax.set_xlabel("index throughput (M keys/s; samples/s at 26 ids per sample)")
    ax.set_title("(c) index throughput: batched (stage B) vs single-lock vs hashing")
    fig.subplots_adjust(left=0.3)
    text = (f"Measured {env.get('time')} on {env.get('platform')} ({env.get('device')}), one "
            f"device, size {args.size}: {args.rows:,} resident ids, {args.keys:,} Zipf (1.05) "
            "queries over twice as many ids. single lock: the host tier's native store "
            "(one mutex, GIL released) answering one 26-id request per call. hashing: id mod "
            "rows (no index, collisions). The paper: its pipelined GPU index 8.26x a locked "
            "index, > 10M samples/s.")
    return save(fig, pathlib.Path(args.figures) / "fig_c_index.png", text)


if __name__ == "__main__":
    raise SystemExit(main())
