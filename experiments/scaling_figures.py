"""Figure (b), scaling: samples/s against devices per system, one panel per
mode (weak: per-device batch fixed; strong: global batch fixed). Plots JSON
lines only (no JAX)."""

from __future__ import annotations

import pathlib

from experiments.figures import SYSTEM_LABELS, first, pyplot, save


def plot(records: list[dict], end_to_end: list[dict], folder: str | pathlib.Path,
         processes: list[dict] = ()) -> list[str]:
    """fig_b_scaling.png from the scaling records (and figure (a)'s runs and
    the mesh over processes, drawn as weak-scaling points at their mesh
    size); its path."""
    plt = pyplot()
    runs = [r for r in records if r.get("bench") == "scaling"]
    modes = list(dict.fromkeys(r["mode"] for r in runs)) or ["weak"]
    systems = list(dict.fromkeys(r["system"] for r in runs))
    fig, axes = plt.subplots(1, len(modes), figsize=(9.5 * len(modes), 4.4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        for i, s in enumerate(systems):
            pts = sorted((r["devices"], r["samples_per_s"]) for r in runs
                         if r["mode"] == mode and r["system"] == s)
            ax.plot([d for d, _ in pts], [v for _, v in pts], marker="o", color=f"C{i}",
                    label=SYSTEM_LABELS.get(s, s))
            fig_a = [(r["devices"], r["samples_per_s"]) for r in end_to_end
                     if mode == "weak" and r["system"] == s]
            ax.scatter([d for d, _ in fig_a], [v for _, v in fig_a], marker="*", s=120,
                       color=f"C{i}", edgecolor="black", linewidth=0.5, zorder=3,
                       label=f"{SYSTEM_LABELS.get(s, s)}, figure (a)'s run" if fig_a else None)
            split = [(r["devices"], r["samples_per_s"], r["processes"]) for r in processes
                     if mode == "weak" and r["system"] == s]
            ax.scatter([d for d, _, _ in split], [v for _, v, _ in split], marker="D", s=60,
                       color=f"C{i}", edgecolor="black", linewidth=0.5, zorder=3,
                       label=f"{SYSTEM_LABELS.get(s, s)}, over {split[0][2]} processes"
                       if split else None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["devices"] for r in [*runs, *end_to_end, *processes]}))
        ax.get_xaxis().set_major_formatter(plt.ScalarFormatter())
        ax.set_xlabel("devices in the mesh")
        ax.set_ylabel("training throughput (samples/s, all devices)")
        ax.set_title(f"(b) {mode} scaling" + (": batch per device fixed" if mode == "weak"
                                             else ": global batch fixed"))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.subplots_adjust(right=0.68)
    env, w = first(records, "environment"), first(records, "scaling_workload")
    setting = (f"Measured {env.get('time', '?')} on {env.get('platform', '?')} "
               f"({env.get('device', '?')}), jax {env.get('jax', '?')}, size {w.get('size')}: "
               f"{w.get('steps')} timed steps after {w.get('warmup')} warm-up steps per point. "
               f"Criteo-like workload (alpha {w.get('alpha')}, {w.get('vocab_rows', 0):,} "
               f"vocabulary rows); weak: global batch {w.get('batch')} / "
               f"{w.get('devices')} x devices; strong: {w.get('batch')}. hypereca plans its "
               "hot fold for the paper's 32-GPU cluster: tens of thousands of replicated rows, "
               "whose all-reduce and update cost more here than the memory-copy exchange they "
               "save (see projection.py for where they pay)."
               + ("\nStars: figure (a)'s run on its mesh (hypereca there plans for this "
                  "mesh's measured profile)." if end_to_end else "") +
               ("\nDiamonds: the same mesh and batch split over processes (jax.distributed on "
                "127.0.0.1; collectives between them over TCP)." if processes else "") +
               "\nFake CPU devices share this machine's cores: ideal scaling is a flat line "
               "here, not a rising one; projection.py projects to devices that do not share.")
    return [save(fig, pathlib.Path(folder) / "fig_b_scaling.png", setting)]
