"""The train command end to end: it learns the synthetic stream (well above
the dense-only model), runs as 2 processes with the same result, reads
Criteo files (counting malformed lines), rejects bad input before training,
and resumes after a SIGKILL to the same final parameters."""

import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import slow_case
from jax_hypereca.checkpoint import CheckpointManager
from models import train

REPO = pathlib.Path(__file__).resolve().parents[1]

slow = pytest.mark.skipif(os.environ.get("HYPERECA_SLOW_TESTS") != "1",
                          reason="slow (minutes); set HYPERECA_SLOW_TESTS=1")
TINY = ["--preset", "tiny", "--batch", "512", "--steps", "20", "--eval-every", "10",
        "--eval-size", "2048", "--log-every", "10", "--no-progress"]


def run(args, out: pathlib.Path) -> dict:
    """Runs the command in this process; returns its metrics by kind."""
    summary = train.train(train.parse_args(args + ["--output-dir", str(out)]))
    records = [json.loads(line) for line in open(summary["metrics"])]
    by_kind: dict = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    return by_kind


def make_train(args, out: pathlib.Path) -> dict:
    """`make train ARGS=...` (the README's command; the module directly when
    the venv make would use is not this one), metrics by kind."""
    venv = REPO / ".venv" / "bin" / "python"
    args = args + ["--output-dir", str(out)]
    if venv.exists() and pathlib.Path(sys.executable).resolve() == venv.resolve() and \
            subprocess.run(["make", "-q", ".venv/.hypereca-installed"], cwd=REPO).returncode == 0:
        command = ["make", "train", "ARGS=" + " ".join(args)]
    else:
        command = [sys.executable, "-m", "models.train", *args]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert f"metrics: {out / 'metrics.jsonl'}" in proc.stdout
    by_kind: dict = {}
    for line in open(out / "metrics.jsonl"):
        r = json.loads(line)
        by_kind.setdefault(r["kind"], []).append(r)
    return by_kind


@slow
def test_make_train_meets_the_readme_auc_shortened(tmp_path):
    """The README's `make train` claim, on the default command shortened to
    60 of its 1000 steps: eval AUC >= 0.70, well above the dense-only model."""
    short = ["--steps", "60", "--eval-every", "60", "--eval-size", "16384", "--log-every", "20",
             "--no-progress"]
    full = make_train(short, tmp_path / "full")
    dense = run(short + ["--dense-only"], tmp_path / "dense")
    auc, dense_auc = full["eval"][-1]["auc"], dense["eval"][-1]["auc"]
    assert auc >= 0.70, auc
    assert auc >= dense_auc + 0.03, (auc, dense_auc)
    assert full["eval"][-1]["step"] == 60 and full["eval"][-1]["samples"] == 16384
    config = full["config"][0]
    assert config["config"]["batch"] == 4096 and config["devices"] == 8  # the defaults
    assert config["optimizers"]["sparse"] == {
        "name": "RowwiseAdagrad", "learning_rate": 0.05, "initial_accumulator_value": 0.0,
        "eps": 1e-8, "weight_decay": 0.0}
    assert config["optimizers"]["dense"]["name"] == "optax.adam"
    # exactly one metrics file and a plot, with train, eval and table lines
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["metrics.jsonl",
                                                                     "metrics.png"]
    assert (tmp_path / "full" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    last = full["train"][-1]
    assert last["step"] == 60 and last["samples_per_s"] > 0 and np.isfinite(last["loss"])
    assert set(last["exchange_bytes_per_step"]) == {"ids", "rows", "grads"}
    assert last["exchange"] in ("all_to_all", "ring")  # --exchange auto: measured, either
    tables = full["tables"][-1]
    assert tables["total"]["size"] == sum(t["size"] for t in tables["per_table"].values()) > 0
    assert tables["total"]["evicted"] == 0
    assert full["summary"][-1]["auc"] == auc and "tables" not in dense


def test_optimizer_flags_reach_both_optimizers_and_bad_ones_fail_first(tmp_path, capsys):
    got = run(TINY + ["--steps", "2", "--eval-every", "2", "--sparse-optimizer", "adagrad",
                      "--sparse-initial-accumulator", "0.5", "--sparse-optimizer-args",
                      '{"eps": 1e-6}', "--dense-optimizer", "adagrad", "--dense-optimizer-args",
                      '{"initial_accumulator_value": 0.0, "eps": 1e-8}', "--exchange", "ring",
                      "--admit-after", "2", "--route-ahead", "on"],
              tmp_path / "ok")
    opts = got["config"][0]["optimizers"]
    assert opts["sparse"] == {"name": "Adagrad", "learning_rate": 0.05,
                              "initial_accumulator_value": 0.5, "eps": 1e-6,
                              "weight_decay": 0.0}
    assert opts["dense"]["initial_accumulator_value"] == 0.0 and opts["dense"]["eps"] == 1e-8
    assert np.isfinite(got["eval"][-1]["logloss"])
    assert got["train"][-1]["exchange"] == "ring"
    assert got["train"][-1]["step_reruns"] == 0
    assert got["train"][-1]["routed_ahead"] == 1  # step 2's ids routed by step 1's program
    check_hit_counts(got)
    # --admit-after 2: ids of one step only took no row, counted per table and in all
    tables = got["tables"][-1]
    assert tables["total"]["admission_filtered"] == sum(
        t["admission_filtered"] for t in tables["per_table"].values()) > 0
    out = tmp_path / "bad"
    for flags, message in [
            (["--sparse-optimizer", "sgd", "--sparse-initial-accumulator", "0"],
             "the sgd optimizer has no accumulator"),
            (["--sparse-initial-accumulator", "-1"], "must be a finite number >= 0, got -1.0"),
            (["--sparse-optimizer-args", '{"beta": 1}'],
             "rowwise_adagrad takes no ['beta']; its fields:"),
            (["--dense-optimizer-args", "[1]"], "expected a JSON object"),
            (["--dense-optimizer-args", "{eps: 1}"], "--dense-optimizer-args: not valid JSON"),
            (["--dense-optimizer-args", '{"momentum": 0.9}'],
             "optax.adam takes no ['momentum']; its keyword arguments:"),
            (["--dense-lr", "nan"], "--dense-lr must be a finite number > 0, got nan")]:
        assert train.main(TINY + flags + ["--output-dir", str(out)]) == 2, flags
        assert message in capsys.readouterr().err, flags
    assert not out.exists()  # nothing was trained or written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Small MLPs and few devices: these runs check the command's plumbing (processes,
# checkpoints), and compiling the default model on 8 devices three times took a minute.
SMALL = TINY + ["--bottom-mlp", "16", "--top-mlp", "8"]


@slow_case  # 2 processes: test_multihost (I2, hot folds, ring) and test_fault_peers (the command)
def test_two_processes_train_like_one(tmp_path):
    short = ["--steps", "10", "--eval-every", "5", "--eval-size", "1024"]
    single = run(SMALL + short + ["--devices", "2"], tmp_path / "single")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the command gives each process 2 / 2 CPU devices
    port, out = free_port(), tmp_path / "multi"
    command = [sys.executable, "-m", "models.train", *SMALL, *short, "--output-dir", str(out),
               "--devices", "2"]  # one device per process: as two hosts with a GPU each
    procs = [  # process 0 set up by flags, process 1 by the environment
        subprocess.Popen(command + ["--num-processes", "2", "--process-id", "0",
                                    "--coordinator", f"127.0.0.1:{port}"],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True),
        subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(env, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                             JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"))]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for i, (p, text) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{text[-4000:]}"
    assert f"metrics: {out / 'metrics.jsonl'}" in outs[0]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    config = records[0]
    assert config["processes"] == 2 and config["devices"] == 2
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10]
    for got, want in zip(evals, single["eval"]):  # the same global batches, the same model
        assert got["auc"] == pytest.approx(want["auc"], abs=1e-6)
        assert got["logloss"] == pytest.approx(want["logloss"], abs=1e-5)


def criteo_args(path, *extra):
    return ["--data", str(path), *extra, "--batch", "16", "--steps", "6", "--eval-size", "32",
            "--eval-every", "3", "--log-every", "3", "--no-progress"]


def test_trains_on_real_criteo_lines(shared_data, tmp_path):
    sample = shared_data / "criteo" / "paddlerec_raw_sample_train.tsv"
    if not sample.exists():
        pytest.skip(f"{sample} not found")
    got = run(criteo_args(sample, "--preset", "tiny"), tmp_path / "out")
    assert [r["step"] for r in got["eval"]] == [3, 6] and got["eval"][-1]["samples"] == 32
    assert 0 <= got["eval"][-1]["auc"] <= 1
    data = got["data"][-1]
    assert data["data/lines_read"] >= 100 and data["data/lines_skipped"] == 0
    assert "Criteo files" in got["config"][0]["source"]


GOOD = "1\t5\t1\t\t2\t\t\t\t\t\t\t\t\t\t" + "\t".join(f"{i:08x}" for i in range(26))
BAD = ["0\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\t11\t12\t13\t" + "\t".join(["zzzz"] * 26),  # non-hex
       "1\tabc" + "\t" * 38,                                                     # non-numeric
       "0" + "\t" * 45]                                                          # 46 fields


def test_malformed_lines_are_counted_or_fatal(tmp_path, capsys):
    lines = [GOOD.replace("\t5\t", f"\t{i}\t", 1) for i in range(60)]
    for i, bad in enumerate(BAD):
        lines.insert(40 + 5 * i, bad)
    path = tmp_path / "day_0.tsv"
    path.write_text("\n".join(lines) + "\n")
    got = run(criteo_args(path, "--preset", "tiny"), tmp_path / "skip")
    skipped = got["data"][-1]["data/lines_skipped"]
    assert skipped >= len(BAD) and skipped % len(BAD) == 0  # every pass over the file counts
    assert train.main(criteo_args(path, "--preset", "tiny", "--on-bad-line", "raise",
                                  "--output-dir", str(tmp_path / "raise"))) == 2
    assert f"{path}:41: C1: not a hex id: 'zzzz'" in capsys.readouterr().err


def test_bad_input_fails_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    assert train.main(["--data", str(tmp_path / "missing"), "--output-dir", str(out)]) == 2
    assert f"no such file or directory: {tmp_path / 'missing'}" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert train.main(["--checkpoint-dir", str(blocker / "ck"), "--output-dir", str(out)]) == 2
    assert f"checkpoint directory {blocker / 'ck'} is not writable" in capsys.readouterr().err
    assert not out.exists()  # nothing was trained or written
    with pytest.raises(SystemExit):
        train.parse_args(["--resume"])
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--admit-after", "0"])
    assert "--admit-after must be in 1..127" in capsys.readouterr().err


def test_resume_after_sigkill_ends_where_an_uninterrupted_run_does(tmp_path):
    args = SMALL + ["--checkpoint-every", "5", "--devices", "2"]
    run(args + ["--checkpoint-dir", str(tmp_path / "ck_full")], tmp_path / "full")
    ck, log = tmp_path / "ck_killed", open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "models.train", *args, "--checkpoint-dir",
                             str(ck), "--output-dir", str(tmp_path / "killed")],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not (ck.is_dir() and any(p.name.isdigit() for p in ck.iterdir())):
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # right after its first checkpoint was committed
    assert proc.wait() == -signal.SIGKILL
    killed_at = CheckpointManager(ck).latest_step()
    assert killed_at < 20
    resumed = run(args + ["--checkpoint-dir", str(ck), "--resume"], tmp_path / "killed")
    assert resumed["config"][-1]["step"] == killed_at and resumed["eval"][-1]["step"] == 20
    dense, rows, meta = CheckpointManager(ck).read()
    want_dense, want_rows, want_meta = CheckpointManager(tmp_path / "ck_full").read()
    assert meta["step"] == want_meta["step"] == 20
    for got, want in zip(jax.tree.leaves(dense), jax.tree.leaves(want_dense), strict=True):
        np.testing.assert_array_equal(got, want)
    assert rows.keys() == want_rows.keys()
    for name in rows:
        for got, want in zip(rows[name], want_rows[name], strict=True):
            np.testing.assert_array_equal(got, want)



@slow
def test_the_default_command_meets_its_auc_target(tmp_path):
    """What `make train` runs: the last eval line has auc >= 0.70."""
    got = run(["--no-progress"], tmp_path / "out")
    assert got["eval"][-1]["step"] == 1000 and got["eval"][-1]["auc"] >= 0.70


@slow
@pytest.mark.parametrize("preset", ["criteo-kaggle", "mlperf-dlrmv2"])
def test_large_presets_train_without_diverging(preset, tmp_path):
    got = run(["--preset", preset, "--batch", "256", "--steps", "20", "--eval-every", "20",
               "--eval-size", "1024", "--table-memory-mb", "256", "--log-every", "5",
               "--no-progress"], tmp_path / "out")
    assert got["train"][-1]["loss"] < got["train"][0]["loss"] < 1.0
    assert got["eval"][-1]["logloss"] < 0.7


@slow_case  # the fall-back itself: test_checkpoint's three kinds of damage
def test_resume_skips_a_damaged_latest_checkpoint_and_says_where_it_resumed(tmp_path, capsys):
    args = ["--preset", "tiny", "--batch", "256", "--steps", "4", "--eval-every", "4",
            "--eval-size", "512", "--log-every", "2", "--no-progress", "--devices", "2",
            "--bottom-mlp", "16", "--top-mlp", "8", "--checkpoint-every", "2",
            "--checkpoint-dir", str(tmp_path / "ck"), "--prefetch", "0"]  # no loader thread
    run(args, tmp_path / "first")
    ck = tmp_path / "ck"
    assert CheckpointManager(ck).all_steps() == [2, 4]
    for p in (ck / "4" / "tables").rglob("*"):  # truncate the last step's table data
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    capsys.readouterr()
    resumed = run(args + ["--resume"], tmp_path / "second")
    assert f"resumed from step 2 of {ck} (the latest, step 4, cannot be read)" in \
        capsys.readouterr().out
    assert resumed["config"][-1]["step"] == 2 and resumed["eval"][-1]["step"] == 4
    # the damaged step was moved aside and the resumed run saved step 4 again
    assert (ck / "4.unreadable").is_dir() and CheckpointManager(ck).read()[2]["step"] == 4
    for p in (ck / "2").rglob("*"):  # neither step readable: a clear error, exit status 2
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(b"")
    for p in (ck / "4").rglob("*"):
        if p.is_file() and p.parent.name == "d":
            p.write_bytes(b"")
    assert train.main(args + ["--resume", "--output-dir", str(tmp_path / "third")]) == 2
    err = capsys.readouterr().err
    assert f"error: no checkpoint in {ck} can be read: step 4: " in err and "; step 2: " in err


def host_tier_run(tmp_path, batch: int, steps: int, *extra) -> dict:
    """The tiny preset at the smallest budget (4 tables of 4096 device rows)
    with the host tier: the tables' ids far outnumber the device rows."""
    return run(["--preset", "tiny", "--batch", str(batch), "--steps", str(steps),
                "--eval-every", str(steps), "--eval-size", "4096", "--log-every", str(steps),
                "--no-progress", "--devices", "2", "--bottom-mlp", "16", "--top-mlp", "8",
                "--prefetch", "0", "--host-tier", "--table-memory-mb", "1.5", *extra], tmp_path)


def check_host_tier_run(got: dict, times: float) -> None:
    per_table = got["tables"][-1]["per_table"]
    for name, t in per_table.items():  # I3, exact: on the device, on the host or aged out
        assert t["inserted"] - t["promoted"] == t["size"] + t["host_rows"] + t["ttl_evicted"]
        assert t["evicted"] == t["demoted"] and t["size"] <= t["capacity"] == 4352, name
    c1 = per_table["C1"]
    assert c1["size"] + c1["host_rows"] + c1["ttl_evicted"] >= times * c1["capacity"], c1
    assert c1["promoted"] > 0 and np.isfinite(got["eval"][-1]["logloss"])
    check_hit_counts(got)


def check_hit_counts(got: dict) -> None:
    """The train lines' device-tier counts: every id a step looked up and
    did not find was inserted (a fresh id or a promoted row); a cancelled
    attempt of a re-run step keeps its inserts, which its re-run then finds.
    On the Zipf stream the ids looked up most hit most (after a first step)."""
    lines = got["train"]
    missed = sum(t["queries"] - t["hits"] for t in lines)
    inserted = got["tables"][-1]["total"]["inserted"]
    assert missed == inserted if lines[-1]["step_reruns"] == 0 else missed < inserted
    for t in lines:
        assert t["hits"] <= t["queries"] <= t["lookups"] and t["lookup_hits"] <= t["lookups"]
        assert t["lookup_hit_rate"] > t["hit_rate"] or t["hits"] == 0


def test_a_table_past_its_device_budget_trains_through_the_command(tmp_path):
    # the spelling: --device-table-mb N = --host-tier --table-memory-mb N
    got = run(["--preset", "tiny", "--batch", "1024", "--steps", "16", "--eval-every", "16",
               "--eval-size", "4096", "--log-every", "16", "--no-progress", "--devices", "2",
               "--bottom-mlp", "16", "--top-mlp", "8", "--prefetch", "0",
               "--device-table-mb", "1.5", "--host-ttl-steps", "12"], tmp_path)
    check_host_tier_run(got, times=1.5)  # I3 with the rows aged out (ttl_evicted)
    assert got["tables"][-1]["per_table"]["C1"]["ttl_evicted"] > 0


def test_device_table_mb_is_the_host_tier_at_that_budget_and_one_budget_only(tmp_path, capsys,
                                                                             caplog):
    cfg = train.parse_args(["--device-table-mb", "2"])
    assert cfg.host_tier and cfg.table_memory_mb == 2
    assert train.parse_args(["--device-table-mb", "2", "--table-memory-mb", "2"]).host_tier
    with pytest.raises(SystemExit):
        train.parse_args(["--device-table-mb", "2", "--table-memory-mb", "3"])
    # a device tier smaller than one batch's ids: before training, an error naming both
    # numbers and the flag
    assert train.main(["--preset", "tiny", "--batch", "16384", "--steps", "2", "--no-progress",
                       "--devices", "1", "--bottom-mlp", "16", "--top-mlp", "8",
                       "--eval-size", "1024", "--prefetch", "0", "--device-table-mb", "1.5",
                       "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: table 'C1': 1 batch(es) put" in err and "at most 4352 rows" in err
    assert "distinct ids on one shard" in err and "--device-table-mb 1.5" in err
    # one batch fits, the 3 steps in flight together (pinned, I5) do not: a warning
    with caplog.at_level(logging.WARNING, logger="models.train"):
        assert train.main(["--preset", "tiny", "--batch", "4096", "--steps", "1",
                           "--no-progress", "--devices", "1", "--bottom-mlp", "16",
                           "--top-mlp", "8", "--eval-size", "1024", "--prefetch", "0",
                           "--device-table-mb", "1.5", "--pipeline-depth", "3",
                           "--output-dir", str(tmp_path / "window")]) == 0
    assert "the 3 steps in flight (--pipeline-depth) do not fit together: table 'C1': 3 " \
        "batch(es) put 5552 distinct ids on one shard" in caplog.text


def test_a_full_host_tier_stops_before_the_step_saves_and_resumes(tmp_path, capsys):
    """--host-table-mb too small for step 2's demotions: the command runs
    step 1, saves it, exits with status 2 naming the flag; resumed with more
    room (and LFU eviction) it trains on, every row accounted for (I3)."""
    args = ["--preset", "tiny", "--batch", "1024", "--steps", "3", "--eval-every", "3",
            "--eval-size", "4096", "--log-every", "3", "--no-progress", "--devices", "2",
            "--bottom-mlp", "16", "--top-mlp", "8", "--prefetch", "0",
            "--device-table-mb", "1.5", "--checkpoint-dir", str(tmp_path / "ck")]
    assert train.main(args + ["--host-table-mb", "0.226",
                              "--output-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "host tier full: 'C1' needs" in err and "The step was not run" in err
    assert "--host-table-mb 0.226 per table" in err
    assert "the 1 steps before it are saved" in err and "--resume" in err
    saved = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["step"] for r in saved if r["kind"] == "checkpoint"] == [1]
    got = run(args + ["--host-table-mb", "64", "--resume", "--eviction-policy", "lfu"],
              tmp_path / "b")
    assert got["eval"][-1]["step"] == 3
    assert got["config"][0]["config"]["eviction_policy"] == "lfu"
    for name, t in got["tables"][-1]["per_table"].items():  # I3 across the restore
        assert t["inserted"] - t["promoted"] == t["size"] + t["host_rows"], name
        assert t["host_rows"] > 0, name


@slow
def test_a_table_ten_times_its_device_budget_trains_through_the_command(tmp_path):
    check_host_tier_run(host_tier_run(tmp_path, 4096, 40), times=10)
