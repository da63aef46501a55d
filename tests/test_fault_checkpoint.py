"""Checkpoint writes that fail mid-run: a CheckpointError naming the
checkpoint directory, the file and the last complete step (the train command:
exit status 2 with it), and that checkpoint is intact, reads back as it was
saved and restores; once the fault is gone the same state saves.

Faults (armed just before the second checkpoint, once the first is complete):
* read-only: the directory made unwritable (chmod 555; as root, where chmod
  does not stop writes, ``chattr +i``; where that is not allowed either, a
  wrapper of ``os.makedirs`` raising EROFS for paths in the directory);
* disk full: a wrapper of Orbax's file writer (``epath`` ``write_text``) that
  writes half the data, then raises ENOSPC, as a full disk does.
"""

import contextlib
import errno
import os
import pathlib
import shutil
import subprocess

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath

from jax_hypereca.checkpoint import CheckpointError, CheckpointManager, _os_error
from models import train

sys.path.insert(0, os.path.dirname(__file__))
import test_collection as tc  # noqa: E402
from test_checkpoint import collection_on, rows_by_key  # noqa: E402

slow = pytest.mark.skipif(os.environ.get("HYPERECA_SLOW_TESTS") != "1",
                          reason="slow (a train run per fault); set HYPERECA_SLOW_TESTS=1")

ARGS = ["--preset", "tiny", "--bottom-mlp", "16", "--top-mlp", "8", "--batch", "256",
        "--eval-size", "256", "--eval-every", "100", "--log-every", "100", "--no-progress",
        "--devices", "2", "--steps", "15", "--checkpoint-every", "5"]


def _under(path, directory: pathlib.Path) -> bool:
    return str(path).startswith(str(directory) + os.sep)


def _immutable(directory: pathlib.Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", flag, str(directory)], capture_output=True).returncode == 0


@contextlib.contextmanager
def _read_only(directory: pathlib.Path, monkeypatch):
    """The directory unwritable by the real means this user has, else a wrapper."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield "chmod 555"
        finally:
            directory.chmod(0o755)
    elif _immutable(directory, True):
        try:
            yield "chattr +i"
        finally:
            _immutable(directory, False)
    else:
        makedirs = os.makedirs

        def refuse(path, *args, **kwargs):
            if _under(path, directory):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return makedirs(path, *args, **kwargs)
        monkeypatch.setattr(os, "makedirs", refuse)
        yield "os.makedirs wrapper (EROFS)"


@contextlib.contextmanager
def _disk_full(directory: pathlib.Path, monkeypatch):
    path_type = type(epath.Path(directory))
    write_text = path_type.write_text

    def half_then_enospc(self, data, *args, **kwargs):
        if not _under(self, directory):
            return write_text(self, data, *args, **kwargs)
        write_text(self, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
    monkeypatch.setattr(path_type, "write_text", half_then_enospc)
    yield "write_text wrapper (ENOSPC)"


FAULTS = pytest.mark.parametrize("fault, strerror",
                                 [(_read_only, None), (_disk_full, "No space left")],
                                 ids=["read_only", "disk_full"])


@pytest.fixture(scope="module")
def two_states():
    """A collection and its train states after 3 and 5 steps (2 devices)."""
    tx = optax.adam(0.01)
    coll = collection_on(2)
    step = coll.make_train_step(tc.head_loss, tx)
    state = coll.init_train_state(tc.init_params(), tx)
    states = {}
    for i, batch in enumerate(tc.make_batches(steps=5), start=1):
        state, _ = step(state, batch)
        if i in (3, 5):
            states[i] = jax.tree.map(jnp.copy, state)  # the next step donates `state`
    return coll, tx, states


@pytest.mark.faults
@FAULTS
def test_a_failed_checkpoint_write_names_the_path_and_keeps_the_last_one(
        tmp_path, monkeypatch, two_states, fault, strerror):
    coll, tx, states = two_states
    ck = tmp_path / "ck"
    ckpt = CheckpointManager(ck)
    ckpt.save(states[3], coll)
    ckpt.wait()
    want_dense, want_rows, _ = ckpt.read()
    with fault(ck, monkeypatch), pytest.raises(CheckpointError) as info:
        ckpt.save(states[5], coll)
        ckpt.wait()  # the write runs in the background; its error comes here at the latest
    monkeypatch.undo()
    msg = str(info.value)
    assert msg.startswith(f"cannot write a checkpoint to {ck}: ")
    assert "The last complete checkpoint, step 3, is intact" in msg
    if strerror:
        assert strerror in msg and f"writing {ck}{os.sep}" in msg
    again = CheckpointManager(ck)
    assert again.all_steps() == [3]
    dense, rows, meta = again.read()
    assert meta["step"] == 3
    for got, want in zip(jax.tree.leaves(dense), jax.tree.leaves(want_dense), strict=True):
        np.testing.assert_array_equal(got, want)
    for name in want_rows:
        for got, want in zip(rows[name], want_rows[name], strict=True):
            np.testing.assert_array_equal(got, want)
    restored, _ = again.restore(coll.init_train_state(tc.init_params(), tx), coll)
    assert int(restored.step) == 3
    got_rows, want_rows = rows_by_key(restored), rows_by_key(states[3])
    assert got_rows.keys() == want_rows.keys()
    for name in want_rows:
        assert got_rows[name].keys() == want_rows[name].keys()
        for key in want_rows[name]:
            np.testing.assert_array_equal(got_rows[name][key], want_rows[name][key])
    again.save(states[5], coll)  # the fault gone, the state that failed to save saves
    again.wait()
    assert again.all_steps() == [3, 5]


@slow
@pytest.mark.faults
@FAULTS
def test_a_checkpoint_write_failing_mid_run_stops_with_the_path_and_keeps_the_last(
        tmp_path, monkeypatch, capsys, fault, strerror):
    ck = tmp_path / "ck"
    saved_params, broken = [], contextlib.ExitStack()
    real_save = CheckpointManager.save

    def save(self, state, collection, **kwargs):
        if saved_params and not broken._exit_callbacks:  # the second checkpoint
            self.wait()  # the first is complete
            broken.enter_context(fault(ck, monkeypatch))
        saved_params.append(jax.device_get(state.params))
        return real_save(self, state, collection, **kwargs)

    monkeypatch.setattr(CheckpointManager, "save", save)
    with broken:
        status = train.main(ARGS + ["--checkpoint-dir", str(ck),
                                    "--output-dir", str(tmp_path / "out")])
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2, err
    assert err.startswith(f"error: cannot write a checkpoint to {ck}: ")
    assert "The last complete checkpoint, step 5, is intact" in err
    assert "--checkpoint-dir" in err
    if strerror:
        assert strerror in err and f"writing {ck}{os.sep}" in err
    ckpt = CheckpointManager(ck)
    assert ckpt.all_steps() == [5]
    dense, rows, meta = ckpt.read()
    assert meta["step"] == 5 and rows and all(len(r.keys) for r in rows.values())
    for got, want in zip(jax.tree.leaves(dense["params"]), jax.tree.leaves(saved_params[0]),
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_tensorstore_write_errors_are_recognised():
    """A real full disk fails inside TensorStore, as a ValueError (seen with
    RLIMIT_FSIZE on this machine: os_error_code 27)."""
    error = ValueError('OUT_OF_RANGE: Error writing local file "/ck/5.tmp/state/_sharding": '
                       'Failed writing: "/ck/5.tmp/state/_sharding.__lock": Failed to write '
                       "1509 bytes to file 4: No space left on device [os_error_code='28']")
    assert _os_error(error) == (28, "/ck/5.tmp/state/_sharding")
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = PermissionError(1, "Operation not permitted", "/ck/5.tmp")
    assert _os_error(wrapped) == (1, "/ck/5.tmp")
    assert _os_error(ValueError("shape mismatch")) == (None, None)
