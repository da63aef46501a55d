"""Figures (d) ring vs all-to-all and (g) the step's time per stage, from the
JSON lines of ``experiments.bench_exchange`` and ``experiments.bench_pipeline``.

    python -m experiments.micro_figures [--exchange FILE] [--pipeline FILE]
                                        [--figures DIR]

Plots JSON lines only (no JAX); a figure whose file is missing is skipped."""

from __future__ import annotations

import argparse
import pathlib

from experiments.figures import first, pyplot, read_jsonl, save

PAPER_RING = "paper: the ring schedule +40.8% over a contended all-to-all (real links)"


def _env(records: list[dict]) -> str:
    env = first(records, "environment")
    return f"{env.get('time', '?')}, {env.get('platform', '?')}, jax {env.get('jax', '?')}"


def plot_exchange(records: list[dict], path: pathlib.Path) -> str | None:
    """Median step time of both schedules per device count."""
    rows = sorted((r for r in records if r.get("bench") == "exchange_strategy"),
                  key=lambda r: r["devices"])
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = range(len(rows))
    for k, (key, label) in enumerate((("seconds_median_all_to_all", "all-to-all"),
                                      ("seconds_median_ring", "ring"))):
        ys = [r[key] * 1e3 for r in rows]
        ax.bar([i + k * 0.4 for i in x], ys, 0.4, label=label)
    for i, r in enumerate(rows):
        ax.text(i + 0.2, max(r["seconds_median_all_to_all"], r["seconds_median_ring"]) * 1e3,
                f"ring {r['ring_vs_all_to_all']:.2f}x\nauto: {r['auto_picked']}", ha="center",
                va="bottom", fontsize=7)
    top = max(max(r["seconds_median_all_to_all"], r["seconds_median_ring"]) for r in rows)
    ax.set_ylim(0, top * 1e3 * 1.25)  # room for the labels
    ax.set_xticks([i + 0.2 for i in x], [f"{r['devices']} devices" for r in rows])
    ax.set_ylabel("embedding train step (ms, median)")
    ax.set_title("(d) ring vs all-to-all exchange")
    ax.legend(fontsize=8)
    r = rows[0]
    return save(fig, path, f"bench_exchange, {_env(records)}: embedding-only step, "
                f"{r['features']} features, batch {r['batch']}, dim {r['dim']}, vocab <= "
                f"{r['max_vocab']:,}, median of {r['steps']} interleaved steps. Fake CPU devices: "
                f"a link is a memory copy without contention, so the schedules tie here; "
                + PAPER_RING)


def plot_breakdown(records: list[dict], path: pathlib.Path) -> str | None:
    """Milliseconds per step of each stage (1 device): the device's stages
    stacked in one bar, the host's (which overlap them) in another."""
    summary = next((r for r in records if r.get("bench") == "summary"
                    and "breakdown_ms" in r), None)
    if summary is None:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    colors = iter(plt.get_cmap("tab20").colors)
    for x, host in ((0, False), (1, True)):
        parts = sorted(((k, v) for k, v in summary["breakdown_ms"].items()
                        if k.startswith("host_") == host), key=lambda kv: -kv[1])
        bottom = 0.0
        for name, ms in parts:
            ax.bar(x, ms, 0.5, bottom=bottom, label=f"{name} {ms:.1f} ms", color=next(colors))
            bottom += ms
    ax.set_xticks([0, 1], ["device ops\n(stage scopes)", "host\n(overlaps the device)"])
    ax.set_xlim(-0.5, 2.6)
    ax.set_ylabel("time per pipelined step, 1 device (ms)")
    ax.set_title("(g) where a train step's time goes")
    ax.legend(fontsize=7, loc="upper right")
    return save(fig, path, f"bench_pipeline, {_env(records)}: TorchRec's DLRM example "
                f"workload, jax.profiler trace of pipelined steps; host_sync is the host "
                f"waiting for the device while it runs the stages on the left.")


def plot(exchange: str | None, pipeline: str | None, figures: str) -> list[str]:
    folder = pathlib.Path(figures)
    made = [plot_exchange(read_jsonl(exchange), folder / "fig_d_exchange.png") if exchange
            else None,
            plot_breakdown(read_jsonl(pipeline), folder / "fig_g_breakdown.png") if pipeline
            else None]
    return [m for m in made if m]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exchange", default=None)
    p.add_argument("--pipeline", default=None)
    p.add_argument("--figures", default="experiments/results/figures")
    args = p.parse_args(argv)
    for path in plot(args.exchange, args.pipeline, args.figures):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
