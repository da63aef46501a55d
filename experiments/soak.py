"""Soak: a long stream of distinct ids through a bounded device tier and the
host tier, every row accounted for at every step, resident memory flat.

    python -m experiments.soak [--quick] [--distinct N] [--out FILE]

Workload: one multi-hot feature (--hot ids per sample, sum pooling) looking
up one table (dim --dim, row-wise Adagrad lr 0.05) through a linear
logistic head on one device, the pipeline at depth 1. Ids are Zipf(--alpha)
ranks over --vocab possible ids, each rank mixed into a distinct positive
int64 id. The table's device tier holds --device-rows rows; the host tier
takes what it evicts and drops rows not looked up for --ttl-steps steps
(without a TTL a stream of ever new ids grows the host tier without bound,
and memory could not be flat). The stream runs until --distinct distinct ids
have been looked up (a bitmap over the ranks counts them exactly).

Checked after every step, exactly (I3): device inserted - promoted == device
rows + host rows + ttl_evicted, and every step's statistics clean (no
overflow, refusal or non-finite gradient: the pipeline raises otherwise).
Resident memory (VmRSS) is sampled every step; after --warmup-share of the
steps (the host tier is then at its TTL steady state) the RSS then is the
reference, and the last step's must lie within 5% of it
(``rss_growth_after_warmup``).

One JSON line every --report-every steps and a summary last: distinct ids,
lookups, steps, rows demoted, promoted, TTL-dropped, rows lost (always 0 or
the run fails), RSS at warm-up and at the end, seconds. Full size (issue 17:
10^8 distinct ids, Zipf 1.05 over 10^9, a 10^6-row device budget) is the
default; ``--quick``: 10^6 distinct ids over 10^8, 10^5 device rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from experiments.harness import JsonLines, environment
from models.metrics_log import resident_mb

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--distinct", type=float, default=None, help="distinct ids to stream")
    p.add_argument("--vocab", type=float, default=None, help="possible ids (Zipf support)")
    p.add_argument("--device-rows", type=int, default=None)
    p.add_argument("--alpha", type=float, default=1.05)
    p.add_argument("--batch", type=int, default=None, help="samples per step")
    p.add_argument("--hot", type=int, default=16, help="ids per sample")
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--ttl-steps", type=int, default=None,
                   help="host rows not looked up for this many steps are dropped (longer "
                        "than a row stays on the device, or demoted rows go at once)")
    p.add_argument("--warmup-share", type=float, default=0.2)
    p.add_argument("--report-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON lines file (default: stdout only)")
    a = p.parse_args(argv)
    a.distinct = int(a.distinct or (1e6 if a.quick else 1e8))
    a.vocab = int(a.vocab or (1e8 if a.quick else 1e9))
    a.device_rows = a.device_rows or (1 << 17 if a.quick else 1 << 20)
    a.batch = a.batch or (2048 if a.quick else 8192)
    a.report_every = a.report_every or (20 if a.quick else 100)
    a.ttl_steps = a.ttl_steps or (50 if a.quick else 200)
    return a


def id_stream(args):
    """Batches of (ranks, ids) [batch, hot]: Zipf ranks in [0, vocab), each
    mixed into a positive int64 id (an odd multiplier: one id per rank)."""
    rng = np.random.default_rng(args.seed)
    v1, a1 = args.vocab + 1.0, 1.0 - args.alpha
    while True:
        u = rng.random((args.batch, args.hot))
        x = (1.0 + u * (v1 ** a1 - 1.0)) ** (1.0 / a1)
        ranks = np.clip(np.floor(x) - 1.0, 0, args.vocab - 1).astype(np.uint64)
        ids = ((ranks + np.uint64(1)) * GOLDEN) >> np.uint64(2)  # in [0, 2^62)
        yield ranks, ids.astype(np.int64)


def build(args):
    import jax
    import jax.numpy as jnp
    import optax
    import jax_hypereca as h

    table = h.TableSpec(name="t", dim=args.dim, capacity=args.device_rows,
                        optimizer=h.RowwiseAdagrad(learning_rate=0.05), seed=0)
    features = [h.FeatureSpec(name="f", table="t", max_ids=args.hot)]
    mesh = h.make_mesh(jax.devices()[:1])
    probe = h.EmbeddingCollection([table], features, mesh=mesh)
    coll = h.EmbeddingCollection([table], features, mesh=mesh, host_tier={
        "ttl_steps": args.ttl_steps}, max_shard_bytes=probe.shard_bytes(probe.init_tables()))

    def loss(params, emb, batch):
        logits = emb["f"] @ params["w"] + params["c"]
        return optax.sigmoid_binary_cross_entropy(logits, batch["y"]).mean()

    dense_tx = optax.sgd(0.01)
    params = {"w": jnp.full((args.dim,), 0.1), "c": jnp.zeros(())}
    step = coll.make_train_step(loss, dense_tx)
    return coll, h.TrainPipeline(step, depth=1), coll.init_train_state(params, dense_tx)


def check_accounting(stats: dict, step: int) -> dict:
    s = stats["t"]
    held = s["size"] + s["host_rows"] + s["ttl_evicted"]
    if s["inserted"] - s["promoted"] != held:
        raise AssertionError(
            f"step {step}: rows lost: inserted {s['inserted']} - promoted {s['promoted']} != "
            f"device {s['size']} + host {s['host_rows']} + ttl_evicted {s['ttl_evicted']}")
    return s


def main(argv=None) -> dict:
    args = parse(argv)
    out = JsonLines(args.out)
    out.emit(environment())
    coll, pipe, state = build(args)
    seen = np.zeros(args.vocab, dtype=bool)  # every page touched now: a flat RSS
    stream = id_stream(args)
    distinct = lookups = step = 0
    rss, t0 = [], time.perf_counter()
    while distinct < args.distinct:
        ranks, ids = next(stream)
        fresh = np.unique(ranks)
        distinct += int(np.count_nonzero(~seen[fresh]))
        seen[fresh] = True
        lookups += ids.size
        y = (ids[:, 0] & 1).astype(np.float32)  # a label the rows can learn
        state = pipe.submit(state, {"ids": {"f": ids}, "y": y})
        pipe.pop_completed()
        step += 1
        s = check_accounting(coll.table_stats(state.tables), step)
        rss.append(resident_mb())
        if step % args.report_every == 0:
            out.emit({"bench": "soak_progress", "step": step, "distinct": distinct,
                      "lookups": lookups, "device_rows": s["size"], "host_rows": s["host_rows"],
                      "demoted": s["demoted"], "promoted": s["promoted"],
                      "ttl_evicted": s["ttl_evicted"], "rss_mb": round(rss[-1], 1),
                      "seconds": round(time.perf_counter() - t0, 1)})
    warm = rss[int(args.warmup_share * (len(rss) - 1))]
    summary = {"bench": "soak_summary", "distinct_ids": distinct, "lookups": lookups,
               "steps": step, "vocab": args.vocab, "alpha": args.alpha,
               "device_rows_budget": int(s["capacity"]), "ttl_steps": args.ttl_steps,
               "device_rows": s["size"], "host_rows": s["host_rows"], "inserted": s["inserted"],
               "demoted": s["demoted"], "promoted": s["promoted"],
               "ttl_evicted": s["ttl_evicted"], "rows_lost": 0, "accounting_checks": step,
               "rss_mb_after_warmup": round(warm, 1), "rss_mb_last": round(rss[-1], 1),
               "rss_mb_peak": round(max(rss), 1),
               "rss_growth_after_warmup": rss[-1] / warm - 1.0,
               "rss_flat": rss[-1] / warm - 1.0 <= 0.05,
               "seconds": round(time.perf_counter() - t0, 1)}
    out.emit(summary)
    out.close()
    return summary


if __name__ == "__main__":
    s = main()
    if not s["rss_flat"]:
        raise SystemExit(f"resident memory grew {s['rss_growth_after_warmup']:.1%} after "
                         f"warm-up ({s['rss_mb_after_warmup']} -> {s['rss_mb_last']} MB): "
                         f"more than 5%")
