"""Figure pieces shared by the figure scripts: matplotlib without a display,
the assumptions written on every figure, and the paper's published numbers.

Imports no JAX (the figure scripts plot from JSON lines)."""

from __future__ import annotations

import json
import pathlib
import textwrap
from typing import Any

# Figure 14 of the paper (32 V100s, 4 nodes, 100 Gb/s InfiniBand), in
# M samples/s. The MLPerf-DLRM run reports HypeReca only.
PAPER_THROUGHPUT = {
    "taobao": {"hypereca": 11.90, "torchrec_style": 5.50, "hugectr_style": 4.70},
    "criteo": {"hypereca": 9.37, "torchrec_style": 2.13, "hugectr_style": 1.35},
    "mlperf": {"hypereca": 3.27},
}


def paper_speedups() -> dict:
    """The paper's throughput over its TorchRec, per workload that reports TorchRec."""
    return {w: {s: round(v / by["torchrec_style"], 3) for s, v in by.items()}
            for w, by in PAPER_THROUGHPUT.items() if "torchrec_style" in by}


PAPER_SOURCE = "HypeReca (USENIX ATC '25), Fig. 14: 32 V100, 4 nodes, 100 Gb/s IB"

SYSTEM_LABELS = {"hypereca": "jax_hypereca", "torchrec_style": "TorchRec-style",
                 "hugectr_style": "HugeCTR-style", "tfde_style": "TFDE-style",
                 "data_parallel": "data parallel",
                 "naive_jax": "naive JAX (jnp.take)",
                 "torchrec_no_dedup": "TorchRec as shipped (ids not deduplicated; projected)"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | pathlib.Path, assumptions: str) -> str:
    """Writes `fig` to `path` (PNG) with `assumptions` wrapped under the plots."""
    width = int(fig.get_figwidth() * 14)  # characters of 7-point monospace per line
    text = "\n".join(textwrap.fill(line, width) for line in assumptions.splitlines())
    lines = text.count("\n") + 1
    height = fig.get_figheight()
    fig.set_figheight(height + 0.17 * lines)
    fig.subplots_adjust(bottom=(0.17 * lines + 0.55) / (height + 0.17 * lines))
    fig.text(0.01, 0.01, text, fontsize=7, va="bottom", ha="left", family="monospace")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return str(path)


def first(records: list[dict[str, Any]], bench: str) -> dict[str, Any]:
    """The first record of kind `bench` ({} if none)."""
    return next((r for r in records if r.get("bench") == bench), {})


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (none if it does not exist)."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
