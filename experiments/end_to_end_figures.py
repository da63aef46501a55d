"""The end-to-end run's two figures: (a) throughput of every system with the
paper's ratios beside ours, (h) held-out AUC against training wall-clock
time. Plots JSON lines only (no JAX); ``python -m experiments.end_to_end_figures
FILE...`` plots several runs' files together (reproduce: one per workload)."""

from __future__ import annotations

import pathlib

from experiments.figures import (PAPER_SOURCE, PAPER_THROUGHPUT, SYSTEM_LABELS, first, pyplot,
                                 read_jsonl, save)


def _setting(records: list[dict]) -> str:
    env = first(records, "environment")
    wls = [r for r in records if r.get("bench") == "end_to_end_workload"]
    w0 = wls[0] if wls else {}
    lines = [f"Measured {env.get('time', '?')} on {env.get('num_devices', '?')} "
             f"{env.get('platform', '?')} devices ({env.get('device', '?')}), "
             f"{w0.get('devices', '?')} in the mesh, jax {env.get('jax', '?')}; size "
             f"{w0.get('size', '?')}: {w0.get('steps', '?')} timed steps after "
             f"{w0.get('warmup', '?')} warm-up steps."]
    for w in wls:
        lines.append(f"{w['workload']}: {w['interaction']} on the synthetic Criteo-like stream, "
                     f"alpha {w['alpha']}, {w['features']} tables, {w['vocab_rows']:,} vocabulary "
                     f"rows (x{w['scale_factor']:.4f} of Criteo Terabyte), batch {w['batch']}, "
                     f"dim {w['dim']}.")
    return "\n".join(lines)


def plot_throughput(runs: list[dict], setting: str, path: pathlib.Path) -> str:
    plt = pyplot()
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    systems = list(dict.fromkeys(r["system"] for r in runs))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        ys = [next((r["samples_per_s"] for r in runs if r["workload"] == w and r["system"] == s),
                   0) for w in workloads]
        ax.bar([k + i * width for k in range(len(workloads))], ys, width,
               label=SYSTEM_LABELS.get(s, s))
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(workloads))], workloads)
    ax.set_ylabel("training throughput (samples/s)")
    ax.set_title("(a) measured here")
    ax.legend(fontsize=8)
    bars = [(s, who) for s in ("hypereca", "hugectr_style") for who in ("ours", "paper")]
    width = 0.8 / len(bars)
    for j, (system, who) in enumerate(bars):
        for k, w in enumerate(workloads):
            by = ({r["system"]: r["samples_per_s"] for r in runs if r["workload"] == w}
                  if who == "ours" else PAPER_THROUGHPUT.get(w, {}))
            if not by.get("torchrec_style") or system not in by:
                continue
            y = by[system] / by["torchrec_style"]
            bx.bar(k + j * width, y, width, color=f"C{systems.index(system)}"
                   if system in systems else "gray", hatch="//" if who == "paper" else None,
                   edgecolor="black", linewidth=0.5,
                   label=f"{SYSTEM_LABELS.get(system, system)}, {who}" if k == 0 else None)
            bx.text(k + j * width, y, f"{y:.2f}x", ha="center", va="bottom", fontsize=7)
    bx.axhline(1.0, color="black", linewidth=0.8)
    bx.set_xticks([k + 0.4 - width / 2 for k in range(len(workloads))], workloads)
    bx.set_ylabel("throughput / TorchRec(-style) throughput")
    bx.set_title("(a) over TorchRec: measured here (solid) vs the paper (hatched)")
    bx.legend(fontsize=8)
    return save(fig, path, setting + f"\nPaper: {PAPER_SOURCE} (ratios of its reported "
                "M samples/s; ours: the TorchRec-style baseline of experiments/baselines.py).")


def plot_auc(points: list[dict], setting: str, path: pathlib.Path) -> str:
    plt = pyplot()
    workloads = list(dict.fromkeys(p["workload"] for p in points))
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.2), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        for s in dict.fromkeys(p["system"] for p in points if p["workload"] == w):
            mine = [p for p in points if p["workload"] == w and p["system"] == s]
            ax.plot([p["train_s"] for p in mine], [p["auc"] for p in mine], marker="o",
                    label=SYSTEM_LABELS.get(s, s))
        ax.set_xlabel("training wall-clock time (s, warm-up and evaluation excluded)")
        ax.set_ylabel("held-out AUC")
        ax.set_title(f"(h) AUC vs time: {w}")
        ax.legend(fontsize=8)
    return save(fig, path, setting + "\nThe paper reports throughput only; every system here "
                "sees the same batches in the same order.")


def plot(records: list[dict], folder: str | pathlib.Path) -> list[str]:
    """Both figures of the end-to-end records (one run's, or several runs'
    concatenated: one per workload) into `folder`; their paths."""
    setting = _setting(records)
    folder = pathlib.Path(folder)
    runs = [r for r in records if r.get("bench") == "end_to_end"]
    points = [r for r in records if r.get("bench") == "end_to_end_point"]
    return [plot_throughput(runs, setting, folder / "fig_a_throughput.png"),
            plot_auc(points, setting, folder / "fig_h_auc_vs_time.png")]


def main(argv=None) -> int:
    """python -m experiments.end_to_end_figures FILE... [--figures DIR]"""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="end_to_end JSON-lines files (one per workload)")
    p.add_argument("--figures", default="experiments/results/figures")
    args = p.parse_args(argv)
    records = [r for f in args.files for r in read_jsonl(f)]
    for path in plot(records, args.figures):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
