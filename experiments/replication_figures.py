"""Figures (e) the two-fold ablation (step time against R with the cost
model's prediction, the U-curve) and (f) coverage rho(R), from the JSON
lines of ``experiments.bench_replication``.

    python -m experiments.replication_figures RESULTS.jsonl [--figures DIR]

Plots JSON lines only (no JAX)."""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from experiments.figures import first, pyplot, read_jsonl, save

PAPER_REPLICATION = "paper: best R vs R = 0, 1.60x (Taobao) to 7.80x (most skewed workload)"


def _setting(records: list[dict]) -> str:
    env, rho = first(records, "environment"), first(records, "replication_rho")
    return (f"bench_replication, {env.get('time', '?')}: {rho.get('devices', '?')} "
            f"{env.get('platform', '?')} devices, {rho.get('batch_per_device', '?')} samples per "
            f"device per step, synthetic Criteo-like stream (26 tables, dim 64); rho from an exact "
            f"peek at {rho.get('peek_batches', '?')} batches.")


def plot_ablation(records: list[dict], path: pathlib.Path) -> str | None:
    """Measured step time of each R of the sweep, and the model's affine fit."""
    model = [r for r in records if r.get("bench") == "replication_model"]
    runs = {r["config"]: r for r in records if r.get("bench") == "replication_run"}
    model = [m for m in model if m["config"] in runs]
    if len(model) < 2:
        return None
    rows = np.array([runs[m["config"]]["hot_rows"] for m in model], float)
    measured = np.array([m["measured_step_s"] for m in model])
    predicted = np.array([m["predicted_exchange_s"] for m in model])
    slope, icpt = np.polyfit(predicted, measured, 1)
    fit = icpt + slope * predicted
    r2 = 1 - ((measured - fit) ** 2).sum() / max(((measured - measured.mean()) ** 2).sum(), 1e-30)
    order = np.argsort(rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = np.maximum(rows[order], 1)
    ax.plot(x, measured[order] * 1e3, "o-", label="measured step time")
    ax.plot(x, fit[order] * 1e3, "s--", label=f"cost model (affine fit, r^2 = {r2:.2f})")
    for r, m, c in zip(rows, measured, (m["config"] for m in model)):
        ax.annotate(c, (max(r, 1), m * 1e3), fontsize=7, textcoords="offset points",
                    xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("hot rows replicated, all tables (R; 0 drawn at 1)")
    ax.set_ylabel("train step time (ms)")
    ax.set_title("(e) two-fold ablation: step time vs R")
    ax.legend(fontsize=8)
    return save(fig, path, _setting(records) + "\nFake CPU devices make the exchange a memory "
                "copy, so replication gains little here and the curve rises; " + PAPER_REPLICATION)


def plot_coverage(records: list[dict], path: pathlib.Path) -> str | None:
    """rho(R): share of the exchanged lookups the R hottest ids per table cover."""
    curves = [(f"synthetic, alpha {r['alpha']}", r["rho_per_table_R"]) for r in records
              if r.get("bench") == "replication_rho"]
    curves += [(f"real Criteo samples ({r['rows']} rows)", r["rho_per_table_R"]) for r in records
               if r.get("bench") == "replication_rho_criteo_samples"]
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, rho in curves:
        rs = sorted(int(k) for k in rho)
        ax.plot([max(r, 1) for r in rs], [rho[str(r)] for r in rs], "o-", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("hot ids per table (R; 0 drawn at 1)")
    ax.set_ylabel("rho(R): share of exchanged lookups covered")
    ax.set_ylim(0, 1.02)
    ax.set_title("(f) coverage of the hot set")
    ax.legend(fontsize=8)
    return save(fig, path, _setting(records) + "\nThe real samples are a few hundred rows: "
                "their curve shows their shape, not a full day's.")


def plot(results: str, figures: str) -> list[str]:
    records = read_jsonl(results)
    folder = pathlib.Path(figures)
    made = [plot_ablation(records, folder / "fig_e_ablation.png"),
            plot_coverage(records, folder / "fig_f_coverage.png")]
    return [m for m in made if m]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results")
    p.add_argument("--figures", default="experiments/results/figures")
    args = p.parse_args(argv)
    for path in plot(args.results, args.figures):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
