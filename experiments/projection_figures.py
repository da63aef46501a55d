"""The projection's figure: the cost model validated on the steps measured
here (left), then projected to 32 GPUs beside the paper's numbers (middle:
the paper's V100 cluster; right: an H100 cluster). Plots JSON lines only."""

from __future__ import annotations

import pathlib

from experiments.figures import PAPER_SOURCE, PAPER_THROUGHPUT, SYSTEM_LABELS, first, pyplot, save


def _validation(ax, points: list[dict], fit: dict) -> None:
    systems = list(dict.fromkeys(q["system"] for q in points))
    for i, s in enumerate(systems):
        mine = [q for q in points if q["system"] == s]
        ax.scatter([q["measured_step_s"] for q in mine], [q["predicted_step_s"] for q in mine],
                   color=f"C{i}", label=SYSTEM_LABELS.get(s, s), s=22)
    lo = min(min(q["measured_step_s"], q["predicted_step_s"]) for q in points) * 0.8
    hi = max(max(q["measured_step_s"], q["predicted_step_s"]) for q in points) * 1.25
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)
    for f in (0.85, 1.15):
        ax.plot([lo, hi], [lo * f, hi * f], color="gray", linewidth=0.6, linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured step time here (s)")
    ax.set_ylabel("predicted, leave one out (s)")
    ax.set_title(f"model vs measured: mean error {fit['projection_error']:.1%} "
                 f"({fit['points']} steps)", fontsize=9)
    ax.legend(fontsize=7)


def _cluster(ax, projected: list[dict], cluster: str, paper: bool) -> None:
    mine = [r for r in projected if r["cluster"] == cluster]
    workloads = list(dict.fromkeys(r["workload"] for r in mine))
    systems = list(dict.fromkeys(r["system"] for r in mine))
    bars = [(s, "model") for s in systems] + (
        [(s, "paper") for s in ("hypereca", "torchrec_style", "hugectr_style")] if paper else [])
    width = 0.85 / len(bars)
    for j, (s, who) in enumerate(bars):
        for k, w in enumerate(workloads):
            y = (PAPER_THROUGHPUT.get(w, {}).get(s) if who == "paper" else
                 next(r["samples_per_s"] / 1e6 for r in mine
                      if r["workload"] == w and r["system"] == s))
            if y is None:
                continue
            ax.bar(k + j * width, y, width, color=f"C{systems.index(s)}", edgecolor="black",
                   linewidth=0.4, hatch="//" if who == "paper" else None,
                   label=f"{SYSTEM_LABELS.get(s, s)}{', paper' if who == 'paper' else ''}"
                   if k == 0 else None)
    ax.set_xticks([k + 0.425 - width / 2 for k in range(len(workloads))], workloads)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 30)  # room for the legend above the bars
    ax.set_ylabel("projected throughput (M samples/s, 32 GPUs)")
    ax.set_title(f"projected: {cluster.upper()}" + (" (hatched: the paper)" if paper else ""),
                 fontsize=9)
    ax.legend(fontsize=6, ncol=2)


def plot(records: list[dict], folder: str | pathlib.Path) -> list[str]:
    """fig_p_projection.png; its path."""
    plt = pyplot()
    assumed = first(records, "projection_assumptions")
    points = [r for r in records if r.get("bench") == "projection_point"]
    projected = [r for r in records if r.get("bench") == "projection"]
    fit = first(records, "projection_fit")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    _validation(axes[0], points, fit)
    _cluster(axes[1], projected, "v100", paper=True)
    _cluster(axes[2], projected, "h100", paper=False)
    rates = ", ".join(f"{k} {v:.3g}" for k, v in fit["rates"].items())
    text = (f"Left: step times measured here (figures (a) and (b): fake CPU devices sharing "
            f"this machine's cores), each predicted by the cost model fitted to the others; "
            f"dashed: +-15%. Fitted rates (s per unit, totals over devices): {rates}; "
            f"r^2 {fit['r2']:.3f}.\n"
            "Middle, right: the same work counts per device at 32 GPUs, 16384 samples per GPU "
            "(the paper's; mlperf: 2048, MLPerf DLRMv2's 65536 in all), the full-size workloads "
            "(vocabularies capped at 1M; dim 64, mlperf 128; the paper: Criteo Kaggle / Taobao / "
            "Criteo Terabyte, dim 128). Devices in parallel, no overlap of "
            f"stages. Dense: fp32 peak x {assumed['dense_efficiency']} (assumed). Index and rows: the H100's "
            "measured find_or_insert and gather rates, x HBM bandwidth ratio for the V100. "
            "Links: " + "; ".join(c["label"] for c in assumed["clusters"].values()) + ", planner's "
            "hierarchical-ring and two-level all-to-all models. hypereca: the planner's hot fold "
            "for that cluster.\nTrust: the work counts are exact, the rates are not measured on "
            "any cluster; a projection says what the counted work implies at published link "
            "speeds (within the shown error only where the model's parts are what dominates "
            f"here). Paper: {PAPER_SOURCE}.")
    return [save(fig, pathlib.Path(folder) / "fig_p_projection.png", text)]
