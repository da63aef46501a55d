"""The train command's metrics: one JSONL file (and its plot) and the
train lines written while the pipeline runs."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np


def resident_mb() -> float:
    """This process's resident memory now (Linux VmRSS), else its peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class MetricsLog:
    """One JSONL file of metrics (written by process 0 only), kept in memory
    too for the plot."""

    def __init__(self, path: Path, *, append: bool, enabled: bool):
        self.path = path
        self.records: list[dict] = []
        if enabled and append and path.exists():
            with open(path) as fh:
                self.records = [json.loads(line) for line in fh if line.strip()]
        self._file = open(path, "a" if append else "w") if enabled else None

    def emit(self, kind: str, **fields) -> dict:
        record = {"kind": kind, **fields}
        self.records.append(record)
        if self._file:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        return record

    def close(self):
        if self._file:
            self._file.close()

    def plot(self, path: Path) -> None:
        """Train loss and eval AUC over steps, as a PNG."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r["kind"] == "train"]
        evals = [r for r in self.records if r["kind"] == "eval"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
        a1.plot([r["step"] for r in evals], [r["logloss"] for r in evals], "o-", label="eval")
        a1.set(xlabel="step", ylabel="log loss", title="loss")
        a1.legend()
        a2.plot([r["step"] for r in evals], [r["auc"] for r in evals], "o-")
        a2.set(xlabel="step", ylabel="AUC", title="eval AUC")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


# Per-step device-tier counts summed over the steps of a train line: ids the
# owners looked up (queries) and found resident (hits), and the batch
# positions behind them (lookups, lookup_hits: duplicates counted).
HIT_COUNTS = ("hits", "queries", "lookup_hits", "lookups")


class TrainLog:
    """Train lines of the metrics file (every --log-every steps: the mean loss
    and samples/s over the steps since the last line, evals and checkpoints
    not counted, the resident memory then, and the device tier's hit rates
    over those steps: ``hit_rate`` per distinct id a step looks up,
    ``lookup_hit_rate`` per lookup; hot-fold ids are not counted) and the
    progress bar."""

    def __init__(self, cfg, mlog: MetricsLog, bar):
        self.cfg, self.mlog, self.bar = cfg, mlog, bar
        self.losses: list[float] = []
        self.counts = dict.fromkeys(HIT_COUNTS, 0)
        self.busy, self.mark, self.last = 0.0, time.perf_counter(), None

    def completed(self, metrics: list[dict], dispatched: int, res) -> None:
        """Records checked steps; with none in flight (a flush), `dispatched`
        is the last one's number."""
        for m in metrics:
            self.losses.append(m["loss"])
            for k in self.counts:
                self.counts[k] += m.get(k, 0)
            self.bar.update(self.cfg.batch)
            self.bar.set_postfix(step=dispatched, loss=f"{m['loss']:.4f}",
                                 auc=f"{res['auc']:.4f}" if res else "-", refresh=False)
        done = dispatched
        if metrics and (done % self.cfg.log_every == 0 or done == self.cfg.steps):
            self.last = self.mlog.emit(
                "train", step=done, loss=float(np.mean(self.losses)),
                samples_per_s=len(self.losses) * self.cfg.batch / self.busy,
                rss_mb=resident_mb(), **self._hit_rates(),
                **{k: v for k, v in metrics[-1].items()
                   if k not in ("loss", "step", *HIT_COUNTS)})
            self.losses, self.busy = [], 0.0
            self.counts = dict.fromkeys(HIT_COUNTS, 0)

    def _hit_rates(self) -> dict:
        """The window's counts and rates (none without a sparse step)."""
        c = self.counts
        if not c["queries"]:
            return {}
        return dict(c, hit_rate=c["hits"] / c["queries"],
                    lookup_hit_rate=c["lookup_hits"] / c["lookups"])

    def pause(self) -> None:
        """Counts the time since `resume` as training (data wait and steps)."""
        self.busy += time.perf_counter() - self.mark

    def resume(self) -> None:
        self.mark = time.perf_counter()
