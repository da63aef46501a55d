"""experiments.projection: the work it counts is the work the programs do.

- The row-sharded hashed-table systems' collectives (XLA's SPMD partitioner
  chooses them) carry exactly the bytes the model charges them, read from the
  compiled HLO (data_parallel's one all-reduce of whole tables is the simple
  case the others' all-reduces already exercise).
- The collection systems' counts equal a dict/numpy count of the same ids:
  unique ids per device, the remote ones, those the hot fold absorbs.
- The fit recovers known rates and predicts a left-out point exactly when
  the model is exact."""

import re
import types

import jax
import numpy as np
import pytest

import jax_hypereca as h
from experiments import baselines, projection
from experiments.workloads import workloads

DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "s64": 8, "f64": 8, "pred": 1}


def collective_bytes(hlo: str) -> dict[str, int]:
    """Bytes of the results of every all-reduce and all-gather, per kind (a
    tuple-shaped collective counts each element)."""
    out = {"all-reduce": 0, "all-gather": 0}
    for line in hlo.splitlines():
        m = re.search(r"= (.*?) (all-reduce|all-gather)(?:-start)?\(", line)
        if not m:
            continue
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", m.group(1)):
            out[m.group(2)] += DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",")
                                                                 if d] or [1]))
    return out


@pytest.mark.parametrize("system,n", [("naive_jax", 2), ("tfde_style", 4)])
def test_hashed_systems_collectives_are_the_bytes_the_model_charges(system, n):
    w = workloads("smoke")["criteo"]
    p = baselines.parts(w, h.make_mesh(jax.devices()[:n]))
    trainer, state = baselines.SYSTEMS[system](p)
    hlo = trainer._step.lower(state, trainer.prepare(p.sample())).compile().as_text()
    got = collective_bytes(hlo)
    flops, param_bytes = projection.dense_cost(p.mcfg, w.features, w.dim)
    work = projection.hashed_work(system, p.tables, n, w.batch // n, w.dim, flops, param_bytes,
                                  sum(w.bags))
    loss_bytes = 4  # the mean loss, all-reduced with the gradients
    assert got["all-reduce"] == work.ar_bytes + loss_bytes
    assert got["all-gather"] == work.ag_bytes
    assert flops > 0 and param_bytes > 0


def _ids(seed: int, shape, vocab: int) -> np.ndarray:
    return np.random.default_rng(seed).zipf(1.3, size=shape).astype(np.int64) % vocab


def test_collection_counts_equal_a_dict_count_of_the_same_ids():
    n, local, dim, batches = 4, 64, 8, 3
    feats = [types.SimpleNamespace(name=f"f{i}", table=f"t{i}") for i in range(2)]
    data = [{"ids": {f.name: _ids(10 * b + i, n * local, 500) for i, f in enumerate(feats)}}
            for b in range(batches)]
    stats = projection.table_stats(types.SimpleNamespace(dim=dim), feats, n, data)
    hot = {"t0": 5}
    work = projection.collection_work(stats, hot, n, local, dim, flops=2.0, param_bytes=100)
    key_ops = a2a = ar = row_bytes = 0.0
    for i, f in enumerate(feats):
        st = stats[i][0]
        hot_ids = set(st.ids[:hot.get(f.table, 0)].tolist())
        counts: dict = {}
        for b in data:
            for d, chunk in enumerate(np.split(b["ids"][f.name], n)):
                mine = set(chunk.tolist())
                key_ops += (len(chunk) + len(mine)) / (batches * n)
                row_bytes += len(mine) * (dim * 4 + 4) * 3 / (batches * n)
                for k in mine:
                    if h.owner_of(np.array([k]), n)[0] != d:
                        counts[k] = counts.get(k, 0) + 1
                        a2a += (k not in hot_ids) * (8 + 2 * dim * 4) / (batches * n)
        # the hot set is the most counted remote ids (ties by id), as the planner's
        top = sorted(counts, key=lambda k: (-counts[k], k))[:hot.get(f.table, 0)]
        assert set(top) == hot_ids
        if f.table in hot:
            touched = np.mean([len(hot_ids & set(b["ids"][f.name].tolist())) for b in data])
            ar += hot[f.table] * 4 + touched * dim * 4 * projection.LADDER_OVERSHOOT
    assert work.key_ops == pytest.approx(key_ops)
    assert work.row_bytes == pytest.approx(row_bytes)
    assert work.a2a_bytes == pytest.approx(a2a)
    assert work.ar_bytes == pytest.approx(ar + 100)
    assert work.flops == 2.0 * local


def test_fit_recovers_rates_and_leave_one_out_is_exact_for_an_exact_model():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 10, size=(12, 4)) * np.array([1e9, 1e6, 1e8, 1.0])
    rates = np.array([2e-10, 0.0, 3e-9, 0.01])
    t = x @ rates
    np.testing.assert_allclose(projection.fit(x, t), rates, rtol=1e-6, atol=1e-15)
    np.testing.assert_allclose(projection.leave_one_out(x, t), t, rtol=1e-6)
