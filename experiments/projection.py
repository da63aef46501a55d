"""Projection to the paper's scale: a cost model of one training step per
system, fitted to the steps measured here, validated on them, and evaluated
for 32 GPUs (the paper's V100 cluster and an H100 cluster).

    python -m experiments.projection FILE... [--out FILE] [--figures DIR]

FILEs: end_to_end and scaling JSON lines (figures (a) and (b)); every
measured step (``end_to_end`` and ``scaling`` records) is a point.

**Work of one step**, counted from the workload, the stream and each
system's layout (never fitted), per device:

- ``flops``: the dense model's forward and backward FLOPs (XLA's cost
  analysis of the gradient of baselines.HashedDLRM, the same network every
  system trains) for its share of the batch;
- ``key_ops``: ids through deduplication and the hash index (collection
  systems: its batch's ids plus the unique ids it owns, from the stream);
- ``row_bytes``: table rows and row-wise optimizer state read or written
  (sparse: gathered and updated rows; dense updates: the whole table);
- collectives: bytes of all-to-all payload (remote ids after dedup and hot
  replication, 8-byte key + row + gradient each), of all-reduce payload
  (touched hot rows, whole-table gradients, the MLPs' gradients) and of
  all-gather results (XLA's masked-gather pattern for jnp.take over a
  row-sharded table: ids and rows of the global batch; checked against the
  compiled HLO in tests/test_projection.py).

**Here** (fake CPU devices share this machine's cores) a step takes the total
work over machine-wide rates: t = sum_k c_k * (work_k summed over devices)
+ a fixed cost per step (one for the collection systems, one for the
hashed-table ones), c >= 0 by non-negative least squares on relative error.
``projection_error``: the mean |predicted - measured| / measured of each
point predicted by a fit without it (leave one out).

**On a cluster** the devices work in parallel and nothing overlaps (the sum
of the stages: no pipeline credit for any system): t = flops / F + key_ops /
K + row_bytes / M + collectives, with F the fp32 peak times DENSE_EFFICIENCY,
K and M the H100's measured find_or_insert and gather rates
(experiments/results/h100-2026-11-26, scaled by HBM bandwidth for the V100),
collectives from the planner's hierarchical-ring all-reduce and two-level
all-to-all models of the cluster's links; hypereca's embedding exchange is
the planner's own prediction for its plan. Batch: the paper's 16384 per GPU
(mlperf: MLPerf DLRMv2's 65536 in all, 2048 per GPU); vocabularies: the
full-size workloads (capped at 1M ids per table).
"""

from __future__ import annotations

import argparse
import dataclasses
import types

import numpy as np

COLLECTION = ("hypereca", "torchrec_style", "hugectr_style", "torchrec_no_dedup")
# Projected only: TorchRec as shipped sends every id of its KJT (no dedup) and
# gets back one pooled partial row per sample, feature and remote owner.
PROJECTED_ONLY = ("torchrec_no_dedup",)
KEY_BYTES = 8
ACC_BYTES = 4            # row-wise Adagrad: one fp32 accumulator per row
LADDER_OVERSHOOT = 1.44  # the touched-row exchange's buffer over the rows it carries
DENSE_EFFICIENCY = 0.5   # of fp32 peak, for the MLPs at 16384 samples per GPU (assumed)
STAT_BATCHES = 8         # batches the stream's counts come from (the plan's batches)
CLUSTER_STAT_BATCHES = 1  # of 32 x 16384 samples
MLPERF_GLOBAL_BATCH = 65536  # MLPerf DLRMv2's reference: 2048 per GPU on 32
PAPER_BATCH_PER_GPU = 16_384  # the paper's samples per GPU per step (DESIGN.md section 2)
H100_GATHER_ROWS_PER_S = 3.03e9  # bench_ops_gpu.jsonl: gather, dim 64 (H100, 2026-11-26)
H100_INDEX_KEYS_PER_S = 6.7e8    # find_or_insert_gather, dim 64
H100_HBM, V100_HBM = 3.35e12, 0.9e12  # bytes/s, published
CLUSTERS = {
    "v100": dict(label="32 V100 (paper's: PCIe 3.0, 100 Gb/s IB per node)",
                 fp32_flops=14e12, hbm=V100_HBM, links=None),
    "h100": dict(label="32 H100 (NVLink 450 GB/s, 8 x 400 Gb/s IB per node)",
                 fp32_flops=67e12, hbm=H100_HBM,
                 links=dict(gpus_per_node=8, num_nodes=4, intra_node_bytes_per_s=450e9,
                            inter_node_bytes_per_s=8 * 50e9, latency_s=5e-6)),
}


@dataclasses.dataclass
class Work:
    """One device's work in one step (see the module docstring)."""

    flops: float
    key_ops: float = 0.0
    row_bytes: float = 0.0
    a2a_bytes: float = 0.0
    ar_bytes: float = 0.0
    ag_bytes: float = 0.0

    def sent_bytes(self, n: int) -> float:
        """Bytes one device sends: all-to-all payload, ring all-reduce and all-gather."""
        return self.a2a_bytes + (n - 1) / n * (2 * self.ar_bytes + self.ag_bytes)

    def features(self, system: str, n: int) -> np.ndarray:
        """The fit's columns: totals over the n devices, then the fixed costs."""
        coll = system in COLLECTION
        return np.array([n * self.flops, n * self.key_ops, n * self.row_bytes,
                         n * self.sent_bytes(n), float(coll), float(not coll)])


FEATURES = ("flops", "key_ops", "row_bytes", "sent_bytes", "fixed_collection", "fixed_hashed")


# ------------------------------------------------------------ the stream
def table_stats(w, features, n: int, batches: list[dict]) -> list:
    """Per table: the planner's TableStats (per-device dedup, remote only)
    and, per batch, the unique ids of the global batch (touched-row counts)."""
    import jax_hypereca as h
    from jax_hypereca.planner import collect_table_stats

    out = []
    for f in features:
        cols = [np.asarray(b["ids"][f.name], np.int64).reshape(-1) for b in batches]
        st = collect_table_stats((np.split(col, n) for col in cols), name=f.table,
                                 dim=w.dim, num_devices=n, max_batches=len(cols),
                                 owner_fn=lambda ids, n=n: h.owner_of(ids, n))
        out.append((st, [np.unique(c) for c in cols]))
    return out


def dense_cost(mcfg, features: int, dim: int) -> tuple[float, int]:
    """(FLOPs per sample of forward + backward, bytes of the MLPs' parameters)."""
    import jax
    import jax.numpy as jnp
    import optax

    from experiments.baselines import HashedDLRM

    model, b = HashedDLRM(config=mcfg), 256
    dense = jnp.zeros((b, 13), jnp.float32)
    emb = [jnp.zeros((b, dim), jnp.float32) for _ in range(features)]
    params = model.init(jax.random.PRNGKey(0), dense, emb)["params"]

    def loss(p, e):
        return optax.sigmoid_binary_cross_entropy(model.apply({"params": p}, dense, e),
                                                  jnp.zeros((b,))).mean()

    cost = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, emb).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    nbytes = sum(x.size * 4 for x in jax.tree_util.tree_leaves(params))
    return float(cost["flops"]) / b, int(nbytes)


# ------------------------------------------------------------ the work
def collection_work(stats: list, hot: dict, n: int, local_batch: int, dim: int,
                    flops: float, param_bytes: int) -> Work:
    """hypereca / TorchRec-style / HugeCTR-style: dedup, owner index, sparse
    update; remote ids not in the hot fold cross the all-to-all; the hot
    fold's touched rows (and their counts) are all-reduced."""
    rb = dim * 4
    work = Work(flops=flops * local_batch, ar_bytes=float(param_bytes))
    for st, uniques in stats:
        per = st.num_batches * n
        r = int(hot.get(st.name, 0))
        unique = st.deduplicated_lookups / per
        work.key_ops += st.total_lookups / per + unique
        work.row_bytes += unique * (rb + ACC_BYTES) * 3
        work.a2a_bytes += (st.counts.sum() - st.counts[:r].sum()) / per * (KEY_BYTES + 2 * rb)
        if r:
            hot_ids = st.ids[:r]
            touched = np.mean([np.isin(u, hot_ids).sum() for u in uniques])
            work.ar_bytes += r * ACC_BYTES + touched * rb * LADDER_OVERSHOOT
    return work


def hashed_work(system: str, tables: list, n: int, local_batch: int, dim: int,
                flops: float, param_bytes: int, ids_per_sample: int) -> Work:
    """data_parallel / naive_jax / tfde_style: jnp.take and a dense update of
    whole tables, collectives as XLA's SPMD partitioner emits them."""
    from experiments.baselines import _hashed_layout

    rb, feats = dim * 4, ids_per_sample
    placement = {"data_parallel": "replicated", "naive_jax": "row_sharded",
                 "tfde_style": "table_wise"}[system]
    rows, _ = _hashed_layout(types.SimpleNamespace(mesh=types.SimpleNamespace(size=n),
                                                   tables=tables), placement)
    work = Work(flops=flops * local_batch, ar_bytes=float(param_bytes))
    if placement == "replicated":  # every replica updated, whole-table gradients all-reduced
        work.row_bytes = 2 * local_batch * feats * rb + 4 * sum(rows) * (rb + ACC_BYTES)
        work.ar_bytes += sum(rows) * rb
        return work
    batch = local_batch * n  # every device gathers its rows for the global batch's ids
    work.row_bytes = 2 * batch * feats * rb + 4 * sum(rows) / n * (rb + ACC_BYTES)
    if n > 1:
        work.ar_bytes += batch * feats * rb              # the masked gathers summed
        work.ag_bytes = batch * feats * (4 + rb)         # ids, then the rows' gradients
    return work


def step_work(system: str, p, n: int, local_batch: int, stats: list, hot: dict,
              dense: tuple[float, int]) -> Work:
    flops, param_bytes = dense
    if system in COLLECTION:
        return collection_work(stats, hot, n, local_batch, p.workload.dim, flops, param_bytes)
    return hashed_work(system, p.tables, n, local_batch, p.workload.dim, flops, param_bytes,
                       sum(p.workload.bags))


def hugectr_hot(p, batches: list[dict]) -> dict:
    """HugeCTR-style's replicated rows per table (baselines.small_table_ids)."""
    from experiments.baselines import small_table_ids

    return {t: len(ids) for t, ids in small_table_ids(p, batches).items()}


# ------------------------------------------------------------ the fit
def fit(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative rates minimizing the relative error of t ~ x @ c."""
    from scipy.optimize import nnls

    scale = x.max(axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(x / scale / t[:, None], np.ones_like(t))
    return c / scale


def leave_one_out(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each point predicted by a fit to the others."""
    keep = np.ones(len(t), bool)
    pred = np.empty_like(t)
    for i in range(len(t)):
        keep[i] = False
        pred[i] = x[i] @ fit(x[keep], t[keep])
        keep[i] = True
    return pred


# ------------------------------------------------------------ measured points
def _workload(name: str, size: str, batch: int):
    from experiments.workloads import workloads

    return dataclasses.replace(workloads(size)[name], batch=batch)


class Streams:
    """Parts, stream counts and dense costs per (workload, size, batch, devices), built once."""

    def __init__(self):
        self._parts, self._stats, self._dense = {}, {}, {}

    def parts(self, name: str, size: str, batch: int):
        from experiments.baselines import parts

        key = (name, size, batch)
        if key not in self._parts:
            self._parts[key] = parts(_workload(name, size, batch), mesh=None)
        return self._parts[key]

    def batches(self, p, count: int) -> list[dict]:
        return [b for _, b in zip(range(count), p.source.train_batches(0))]

    def stats(self, name: str, size: str, batch: int, n: int, count: int = STAT_BATCHES):
        key = (name, size, batch, n)
        if key not in self._stats:
            p = self.parts(name, size, batch)
            self._stats[key] = table_stats(p.workload, p.features, n, self.batches(p, count))
        return self._stats[key]

    def dense(self, p) -> tuple[float, int]:
        key = (p.workload.name, p.workload.features, p.workload.dim)
        if key not in self._dense:
            self._dense[key] = dense_cost(p.mcfg, p.workload.features, p.workload.dim)
        return self._dense[key]


def measured_points(records: list[dict], streams: Streams) -> list[dict]:
    """Every measured step with its work: (record, Work)."""
    sizes = {r["workload"]: r["size"] for r in records
             if r.get("bench") in ("end_to_end_workload", "scaling_workload")}
    out = []
    for r in records:
        if r.get("bench") not in ("end_to_end", "scaling"):
            continue
        n, batch, size = r["devices"], r["batch"], sizes[r["workload"]]
        p = streams.parts(r["workload"], size, batch)
        stats = streams.stats(r["workload"], size, batch, n)
        work = step_work(r["system"], p, n, batch // n, stats, r.get("hot_rows_per_table", {}),
                         streams.dense(p))
        out.append(dict(record=r, work=work, x=work.features(r["system"], n)))
    return out


# ------------------------------------------------------------ the clusters
def cluster_models(name: str):
    """(profile, all-reduce model, all-to-all model) of a 32-GPU cluster."""
    from jax_hypereca.planner import cluster_collectives, cluster_profile, paper_collectives
    from jax_hypereca.planner import paper_profile

    links = CLUSTERS[name]["links"]
    if links is None:
        return (paper_profile(), *paper_collectives())
    return (cluster_profile(name=f"{name}-4x8", source=CLUSTERS[name]["label"], **links),
            *cluster_collectives(**links))


def no_dedup_exchange_s(stats: list, bags: tuple, local_batch: int, profile,
                        dim: int) -> float:
    """TorchRec's row-wise all-to-all as shipped: every id of a device's batch
    to its owner (8 bytes), and per sample and feature one pooled partial
    row back from each remote owner of its bag's ids (and its gradient)."""
    w, total = profile.num_devices, 0.0
    for (st, _), k in zip(stats, bags):
        ids = st.total_lookups / (st.num_batches * w) * (w - 1) / w
        owners = (w - 1) * (1 - (1 - 1 / w) ** k)  # remote owners among a bag's k ids
        nbytes = ids * KEY_BYTES + local_batch * owners * 2 * dim * 4
        total += profile.a2a_fixed_s + nbytes * profile.c_a2a_per_byte
    return total


def embedding_exchange_s(system: str, stats: list, hot: dict, plan, profile, dim: int) -> float:
    """The planner's L(R) summed over tables: hypereca's plan as the planner
    predicts it (touched hot rows); TorchRec-style with R = 0; HugeCTR-style
    with whole small tables all-reduced (dense data-parallel tables)."""
    if system == "hypereca":
        return plan.predicted_step_s
    rb, total = dim * 4, 0.0
    for st, _ in stats:
        r = int(hot.get(st.name, 0))
        remote = (st.counts.sum() - st.counts[:r].sum()) / (st.num_batches * st.num_devices)
        if r:
            total += profile.ar_fixed_s + r * rb * profile.c_ar_per_byte
        if remote > 0:
            total += profile.a2a_fixed_s + remote * (KEY_BYTES + 2 * rb) * profile.c_a2a_per_byte
    return total


def project(cluster: str, workload: str, streams: Streams, systems: list[str],
            batch_per_gpu: int, stat_batches: int = CLUSTER_STAT_BATCHES) -> list[dict]:
    """Step time and samples/s of every system on the 32-GPU cluster."""
    from jax_hypereca.planner import plan_replication

    from experiments.baselines import HOT_BUDGET_BYTES

    profile, ar, _ = cluster_models(cluster)
    spec, n = CLUSTERS[cluster], profile.num_devices
    batch = batch_per_gpu * n
    p = streams.parts(workload, "full", batch)
    stats = streams.stats(workload, "full", batch, n, stat_batches)
    plan = plan_replication([s for s, _ in stats], profile, memory_budget_bytes=HOT_BUDGET_BYTES,
                            optimizer_state_floats_per_row=1, hot_exchange="touched")
    hots = {"hypereca": plan.hot_rows,
            "hugectr_style": hugectr_hot(p, streams.batches(p, stat_batches))}
    ratio = spec["hbm"] / H100_HBM
    rows_per_s = H100_GATHER_ROWS_PER_S * 64 * 4 * ratio
    out = []
    for system in systems:
        hot = hots.get(system, {})
        work = step_work(system, p, n, batch // n, stats, hot, streams.dense(p))
        parts = dict(dense_s=work.flops / (spec["fp32_flops"] * DENSE_EFFICIENCY),
                     index_s=work.key_ops / (H100_INDEX_KEYS_PER_S * ratio),
                     rows_s=work.row_bytes / rows_per_s)
        if system in COLLECTION:
            emb = (no_dedup_exchange_s(stats, p.workload.bags, batch // n, profile,
                                       p.workload.dim) if system in PROJECTED_ONLY else
                   embedding_exchange_s(system, stats, hot, plan, profile, p.workload.dim))
            parts["exchange_s"] = (emb
                                   + ar.fixed_s + streams.dense(p)[1] * ar.seconds_per_byte)
        else:
            parts["exchange_s"] = (ar.fixed_s + work.ar_bytes * ar.seconds_per_byte
                                   + (work.ag_bytes > 0) * (ar.fixed_s + work.ag_bytes
                                                            * ar.seconds_per_byte) / 2)
        step = sum(parts.values())
        out.append(dict(bench="projection", cluster=cluster, workload=workload, system=system,
                        devices=n, batch=batch, step_s=step, samples_per_s=batch / step,
                        hot_rows=int(sum(hot.values())),
                        **{k: round(v, 6) for k, v in parts.items()}))
    return out



def batch_per_gpu(workload: str) -> int:
    """The paper's 16384 samples per GPU; MLPerf DLRMv2's reference batch for mlperf."""
    return MLPERF_GLOBAL_BATCH // 32 if workload == "mlperf" else PAPER_BATCH_PER_GPU


# ------------------------------------------------------------ the run
def validate(points: list[dict], out) -> dict:
    """Fit on every point, predict each one left out; emits a line per point."""
    x = np.stack([q["x"] for q in points])
    t = np.array([q["record"]["step_s"] for q in points])
    coef, loo = fit(x, t), leave_one_out(x, t)
    err = np.abs(loo - t) / t
    for q, pred, e in zip(points, loo, err):
        r = q["record"]
        out.emit(dict(bench="projection_point", workload=r["workload"], system=r["system"],
                      devices=r["devices"], batch=r["batch"], measured_step_s=r["step_s"],
                      predicted_step_s=float(pred), fitted_step_s=float(q["x"] @ coef),
                      error=float(e), **{k: float(v) for k, v in zip(FEATURES, q["x"])}))
    fitted = x @ coef
    r2 = 1 - np.sum((t - fitted) ** 2) / np.sum((t - t.mean()) ** 2)
    return out.emit(dict(bench="projection_fit", points=len(t),
                         rates={k: float(v) for k, v in zip(FEATURES, coef)},
                         r2=float(r2), projection_error=float(err.mean()),
                         max_error=float(err.max()),
                         fit_error=float(np.mean(np.abs(fitted - t) / t))))


def summarize(fitted: dict, projected: list[dict]) -> dict:
    from experiments.figures import paper_speedups

    speedup = {}
    for r in projected:
        base = next(q["samples_per_s"] for q in projected if q["cluster"] == r["cluster"]
                    and q["workload"] == r["workload"] and q["system"] == "torchrec_style")
        speedup.setdefault(r["cluster"], {}).setdefault(r["workload"], {})[r["system"]] = \
            round(r["samples_per_s"] / base, 3)
    hyper = {c: {w: {"vs_torchrec_style": by["hypereca"],
                     "vs_torchrec_as_shipped": round(by["hypereca"] / by["torchrec_no_dedup"], 3)}
                 for w, by in per.items() if "torchrec_no_dedup" in by}
             for c, per in speedup.items()}
    return dict(bench="projection_summary", projection_error=round(fitted["projection_error"], 4),
                projected_hypereca_speedup=hyper,
                goal_projection_error=0.15, points=fitted["points"], r2=round(fitted["r2"], 4),
                projected_m_samples_per_s={
                    f"{r['cluster']}/{r['workload']}/{r['system']}":
                    round(r["samples_per_s"] / 1e6, 3) for r in projected},
                projected_speedup_vs_torchrec_style=speedup,
                paper_speedup_vs_torchrec=paper_speedups())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="end_to_end / scaling JSON lines")
    p.add_argument("--out", help="also write the JSON lines to this file")
    p.add_argument("--figures", default="experiments/results/figures")
    p.add_argument("--workloads", default="criteo,taobao,mlperf", help="projected workloads")
    p.add_argument("--batch-per-gpu", type=int, default=None,
                   help="samples per GPU in the projection (default: the paper's 16384; "
                        "mlperf: 2048, MLPerf DLRMv2's 65536 over 32)")
    p.add_argument("--stat-batches", type=int, default=CLUSTER_STAT_BATCHES,
                   help="batches of 32 x batch-per-gpu the projection counts ids in")
    args = p.parse_args(argv)

    from experiments import projection_figures
    from experiments.baselines import SYSTEMS
    from experiments.figures import read_jsonl
    from experiments.harness import JsonLines, environment

    out = JsonLines(args.out)
    out.emit(environment())
    out.emit(dict(bench="projection_assumptions", dense_efficiency=DENSE_EFFICIENCY,
                  clusters={k: {**v, "links": v["links"] or "the paper's"}
                            for k, v in CLUSTERS.items()},
                  h100_gather_rows_per_s=H100_GATHER_ROWS_PER_S,
                  h100_index_keys_per_s=H100_INDEX_KEYS_PER_S))
    records = [r for f in args.files for r in read_jsonl(f)]
    streams = Streams()
    points = measured_points(records, streams)
    fitted = validate(points, out)
    projected = [out.emit(r) for c in CLUSTERS for w in args.workloads.split(",")
                 for r in project(c, w, streams, [*SYSTEMS, *PROJECTED_ONLY],
                                  args.batch_per_gpu or batch_per_gpu(w), args.stat_batches)]
    summary = summarize(fitted, projected)
    summary["figures"] = projection_figures.plot(out.records, args.figures)
    out.emit(summary)
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
