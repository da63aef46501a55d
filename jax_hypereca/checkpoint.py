"""World-size independent Orbax checkpoints of an EmbeddingCollection's
TrainState: dense params, their optimizer state, the step, and every table
in both folds (the sharded cold fold and the replicated hot folds).

    ckpt = CheckpointManager("/ckpt/run1")
    ckpt.save(state, collection)                       # async; returns quickly
    ...
    state = collection.init_train_state(params, tx)    # template on any mesh
    state, extra = ckpt.restore(state, collection)     # latest step

A table is saved as its resident rows keyed by id (key, values, optimizer
state, scores), never as slots of a shard: each shard's rows are copied to
the host first (so the next donated step may reuse the table's buffers while
Orbax writes), packed, and written as one global array per field (each
process writes its own shards' rows); a hot fold is saved once, from one
replica. Restoring reads every row and inserts it on its owner under the new
mesh (``owner_of(id, W)``, ``import_rows`` per shard), and rebuilds each hot
fold on every device, so a checkpoint taken on 8 devices restores onto 4 or
1. Cumulative counters are kept as totals over the shards (the per-shard
sizes are recounted by the inserts).

Orbax writes each step into a temporary directory renamed into place when
complete: a crash mid-save leaves the previous checkpoint as the latest. A
complete checkpoint whose files were damaged later (truncated, bytes flipped:
TensorStore checksums its data) fails to read; `restore` then warns and falls
back to the next older one, and raises CheckpointError if none can be read.
A write that fails (disk full, directory read-only) raises CheckpointError
naming the directory, the file and the last complete step, which is left
intact; with async saves that happens at the next `save`, `wait` or `close`.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jax_hypereca.admission import filtered_totals
from jax_hypereca.collection import EmbeddingCollection, TrainState
from jax_hypereca.errors import HyperecaError
from jax_hypereca.hashing import owner_of
from jax_hypereca.placement import (
    counter_totals, live_rows, local_rows, place_rows, replica_rows, rows_on_mesh)
from jax_hypereca.replication import replicate_rows
from jax_hypereca.table import COUNTER_NAMES, Rows

log = logging.getLogger("jax_hypereca")

FORMAT_VERSION = 1
ROW_FIELDS = Rows._fields  # keys, values, opt_state, last_step, freq


class CheckpointError(HyperecaError):
    """A checkpoint cannot be written or does not match what restores it."""


def check_writable(directory: str | os.PathLike) -> Path:
    """Creates `directory` if needed and checks a file can be written there;
    raises CheckpointError saying why not (before any training starts)."""
    path = Path(directory).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise CheckpointError(f"checkpoint directory {path} is not writable: "
                              f"{e.strerror or e}") from None
    return path


def _copy_dense(tree):
    """Fresh buffers of the dense state (the next step donates the live ones)."""
    return jax.tree.map(lambda x: jnp.copy(x) if isinstance(x, jax.Array) else x, tree)


class CheckpointManager:
    """Orbax CheckpointManager for TrainStates of an EmbeddingCollection (or
    of a dense-only model: ``collection=None`` and no tables).

    Args:
      directory: where steps are written (one subdirectory per step).
      max_to_keep: newest checkpoints kept (older ones are deleted).
      async_save: write in a background thread; `save` returns once the
        state is copied.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2,
                 async_save: bool = True):
        self.directory = check_writable(directory)
        self._mgr = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                           "tables": ocp.PyTreeCheckpointHandler(),
                           "admission": ocp.PyTreeCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (None if there is none)."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of every complete checkpoint, oldest first."""
        return sorted(self._mgr.all_steps())

    def save(self, state: TrainState, collection: EmbeddingCollection | None, *,
             extra: Mapping[str, Any] | None = None) -> int:
        """Writes `state` as the checkpoint of step ``state.step``. Every
        process calls it. Blocks while the tables are copied to the host and
        packed; Orbax writes them in the background. Returns the step."""
        step = int(np.asarray(state.step.addressable_shards[0].data))
        cold, hot, meta_tables = {}, {}, {}
        tier_stats = (collection.host_tier.stats(total=True)
                      if collection is not None and collection.host_tier is not None else {})
        for name, st in state.tables.items():
            spec = collection.tables[name]
            counters = counter_totals({name: st})[name]
            blocks, host_rows = local_rows(st), 0
            if collection.host_tier is not None:  # host-tier rows join their owners'
                blocks = _with_host_rows(blocks, collection.host_tier.rows(name),
                                         collection.host_tier.local, collection.num_shards)
                host_rows = tier_stats[name]["host_rows"]
            # one padding row at least: Orbax refuses zero-size arrays (a table
            # with no row yet, or all of them in the host tier of another process)
            on_mesh = rows_on_mesh(blocks, collection.mesh, collection.axis, min_rows=1)
            cold[name] = dict(on_mesh._asdict(), counters=counters)
            meta_tables[name] = dict(capacity=int(st.keys.shape[0]), dim=spec.dim,
                                     state_width=spec.state_width,
                                     dtype=np.dtype(spec.dtype).name,
                                     rows=int(counters[COUNTER_NAMES["size"]]) + host_rows,
                                     hot_rows=None)
            if collection.host_tier is not None:  # totals over the processes
                meta_tables[name]["host_moved"] = {
                    k: tier_stats[name][k] for k in collection.host_tier.moved[name]}
        for name, st in state.hot.items():
            rows, counters = replica_rows(st)
            hot[name] = dict(rows._asdict(), counters=counters)  # the same on every process
            meta_tables[name]["hot_rows"] = len(rows.keys)
        dense = _copy_dense({"params": state.params, "opt_state": state.opt_state,
                             "step": state.step})
        meta = dict(format=FORMAT_VERSION, step=step, tables=meta_tables,
                    num_shards=collection.num_shards if collection else None,
                    admission={n: int(a["sketch"].shape[0])
                               for n, a in state.admission.items()},
                    admission_filtered=filtered_totals(state.admission),
                    extra=dict(extra or {}))
        items = dict(state=ocp.args.PyTreeSave(dense), meta=ocp.args.JsonSave(meta))
        if cold:
            items["tables"] = ocp.args.PyTreeSave(dict(cold=cold, **({"hot": hot} if hot else {})))
        if state.admission:
            items["admission"] = ocp.args.PyTreeSave(_copy_dense(state.admission))
        with self._writing():
            written = self._mgr.save(step, args=ocp.args.Composite(**items))
        if not written:
            log.warning("checkpoint of step %d not written: %s already holds step %s (Orbax "
                        "saves only steps above the latest)", step, self.directory,
                        self.latest_step())
        return step

    def restore(self, template: TrainState, collection: EmbeddingCollection | None, *,
                step: int | None = None) -> tuple[TrainState, dict]:
        """The checkpoint of `step` (default: the latest readable one) on the
        template's mesh: ``template`` gives the dense state's structure and
        shardings (e.g. ``collection.init_train_state(params, tx)``; its
        tables are not used), `collection` the tables and the mesh they are
        re-sharded onto; hot folds come back as hot folds of the same ids.
        Returns (state, the ``extra`` given to save).

        Without `step`, a checkpoint whose files cannot be read (truncated,
        corrupt) is skipped with a warning naming it and the error, and the
        next older one is restored; nothing of the skipped one is used.
        CheckpointError when no checkpoint can be read (each step tried and
        its error named), when the given `step` cannot be read, or when the
        checkpoint does not match `collection`."""
        def read(s: int):
            meta = self._meta(s)
            self._check_tables(s, meta, collection)
            dense = {"params": template.params, "opt_state": template.opt_state,
                     "step": template.step}
            items = {"state": dense}
            if _same_sketches(meta, template, collection):
                items["admission"] = template.admission
            d = self._mgr.restore(s, args=ocp.args.Composite(**{
                k: ocp.args.PyTreeRestore(v, restore_args=ocp.checkpoint_utils.
                                          construct_restore_args(v)) for k, v in items.items()}))
            return meta, dict(d["state"], admission=d.get("admission")), self._rows(s, meta)

        (meta, d, (cold, hot)), skipped = self._first_readable(step, read)
        self._set_aside(skipped)
        tier = collection.host_tier if collection is not None else None
        if tier is not None:
            # every row to the host tier, the device tier empty at its
            # configured size: the steps promote what they need, and no
            # device budget is passed however the checkpoint was taken
            tier.load({n: rows for n, (rows, _) in cold.items()},
                      moved={n: m.get("host_moved") for n, m in meta["tables"].items()})
            cold = {n: (Rows.empty(collection.tables[n]), c) for n, (_, c) in cold.items()}
        tables = {name: place_rows(collection.tables[name], rows, counters, collection.mesh,
                                    collection.axis,
                                    min_capacity=0 if tier is not None
                                    else meta["tables"][name]["capacity"])
                  for name, (rows, counters) in cold.items()}
        hot = {name: replicate_rows(collection.tables[name], rows, counters, collection.mesh)
               for name, (rows, counters) in hot.items()}
        admission = d.get("admission") or _carry_totals(meta, template.admission)
        return TrainState(d["params"], d["opt_state"], tables, d["step"], hot,
                          admission), meta["extra"]

    def _check_tables(self, step: int, meta: dict, collection: EmbeddingCollection | None):
        """Raises CheckpointError unless `meta`'s tables are the collection's."""
        want = set(collection.tables) if collection else set()
        if set(meta["tables"]) != want:
            raise CheckpointError(f"{self.directory} step {step} holds tables "
                                  f"{sorted(meta['tables'])}, the collection has {sorted(want)}")
        for name, m in meta["tables"].items():
            spec = collection.tables[name]
            if (m["dim"], m["state_width"]) != (spec.dim, spec.state_width):
                raise CheckpointError(
                    f"table {name!r}: checkpoint rows have dim {m['dim']} and optimizer state "
                    f"width {m['state_width']}; the spec has {spec.dim} and {spec.state_width}")

    def _first_readable(self, step: int | None, read: Callable[[int], Any]
                        ) -> tuple[Any, list[int]]:
        """(``read(s)`` of `step`, or without one of the newest step it
        succeeds on; the newer steps it failed on). A step whose files fail to
        read or decode (any error but a CheckpointError, which says the
        checkpoint does not fit and is raised as is) is logged and the next
        older one tried; CheckpointError naming every step tried and its
        error when none can be read."""
        steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failed, last = [], None
        for i, s in enumerate(steps):
            try:
                return read(s), [f for f, _ in failed]
            except CheckpointError:
                raise
            except Exception as e:  # noqa: BLE001  (whatever Orbax, TensorStore, json raise)
                failed.append((s, _describe(e)))
                last = e
                if i + 1 < len(steps):
                    log.warning("checkpoint step %d in %s cannot be read (%s); falling back to "
                                "step %d", s, self.directory, _describe(e), steps[i + 1])
        what = (f"checkpoint step {step} in {self.directory} cannot be read: {failed[0][1]}"
                if step is not None else f"no checkpoint in {self.directory} can be read: "
                + "; ".join(f"step {s}: {e}" for s, e in failed))
        raise CheckpointError(
            f"{what}. Their files are truncated or corrupt: restore them from a copy, or "
            f"start from scratch (the train command: without --resume) or from another "
            f"checkpoint directory.") from last

    def _set_aside(self, steps: list[int]) -> None:
        """Renames unreadable checkpoints to ``<step>.unreadable`` (kept for
        inspection, no longer steps): Orbax saves no step at or below the
        latest, so left in place they would silently drop the resumed run's
        checkpoints up to their step. Process 0 renames; every process calls
        it (a restore does)."""
        if not steps:
            return
        if jax.process_index() == 0:
            for s in steps:
                src, dst = self.directory / str(s), self.directory / f"{s}.unreadable"
                for k in range(1, 1000):
                    if not dst.exists():
                        break
                    dst = self.directory / f"{s}.unreadable-{k}"
                if src.is_dir():
                    src.rename(dst)
                    log.warning("moved the unreadable checkpoint %s to %s", src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jax_hypereca: unreadable checkpoints moved")
        self._mgr.reload()

    def read(self, step: int | None = None) -> tuple[dict, dict[str, Rows], dict]:
        """A checkpoint on the host, with no mesh or template: (the dense state
        as numpy {"params", "opt_state", "step"} in Orbax's saved tree form,
        each table's rows of both folds keyed by id (in id order), the
        metadata)."""
        def read_host(s: int):
            meta = self._meta(s)
            tree = self._mgr.item_metadata(s)["state"]
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            dense = self._mgr.restore(s, args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(restore_args=as_numpy)))["state"]
            return meta, dense, self._rows(s, meta)

        (meta, dense, (cold, hot)), _ = self._first_readable(step, read_host)
        rows = {}
        for name, (r, _) in cold.items():
            both = Rows.concat([r, hot[name][0]]) if name in hot else r
            order = np.argsort(both.keys, kind="stable")
            rows[name] = Rows(*(a[order] for a in both))
        return dense, rows, meta

    def _meta(self, step: int) -> dict:
        """The metadata of `step`, checked for this format version."""
        meta = self._mgr.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{self.directory} step {step}: format "
                                  f"{meta.get('format')}, expected {FORMAT_VERSION}")
        return meta

    def _rows(self, step: int, meta: dict) -> tuple[dict, dict]:
        """Every table's live rows and counters, read whole on the host:
        ({table: (rows, counters)} of the cold fold, the same of hot folds)."""
        if not meta["tables"]:
            return {}, {}
        fields = {f: ocp.RestoreArgs(restore_type=np.ndarray)
                  for f in ROW_FIELDS + ("counters",)}
        args = {"cold": {n: fields for n in meta["tables"]}}
        hot_names = [n for n, m in meta["tables"].items() if m["hot_rows"] is not None]
        if hot_names:
            args["hot"] = {n: fields for n in hot_names}
        saved = self._mgr.restore(step, args=ocp.args.Composite(
            tables=ocp.args.PyTreeRestore(restore_args=args)))["tables"]
        return tuple({name: (live_rows([np.asarray(f[k]) for k in ROW_FIELDS]),
                             np.asarray(f["counters"]))
                      for name, f in saved.get(fold, {}).items()} for fold in ("cold", "hot"))

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        with self._writing():
            self._mgr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's resources."""
        with self._writing():
            self._mgr.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Turns a failed write (here or in Orbax's background save) into a
        CheckpointError naming the directory, the file and the intact step."""
        try:
            yield
        except Exception as e:
            code, where = _os_error(e)
            if code is None:
                raise
            latest = self.latest_step()
            raise CheckpointError(
                f"cannot write a checkpoint to {self.directory}: {os.strerror(code)} "
                f"(errno {errno.errorcode.get(code, code)}) writing {where or self.directory}. "
                f"The last complete checkpoint, "
                f"{'step %d' % latest if latest is not None else 'none'}, is intact. Free "
                f"space or make the directory writable (or write elsewhere: the train "
                f"command's --checkpoint-dir), then resume.") from e




_TENSORSTORE_OS_ERROR = re.compile(
    r'(?:writing|creating|renaming)[^"]*"([^"]+)".*\[os_error_code=\'(\d+)\'\]', re.S)


def _same_sketches(meta: dict, template: TrainState,
                   collection: EmbeddingCollection | None) -> bool:
    """Whether the checkpoint's admission sketches fit the template's (same
    tables, sizes and device count: each owner's sketch counts the ids that
    hash to it). Otherwise the template's empty ones are kept and the counts
    of ids not admitted yet start again (logged; admitted ids keep their rows,
    admission.py)."""
    saved = meta.get("admission") or {}
    want = {n: int(a["sketch"].shape[0]) for n, a in template.admission.items()}
    if saved and saved == want and meta.get("num_shards") == collection.num_shards:
        return True
    if saved or want:
        log.warning("admission sketches not restored (saved %s on %s devices, this run "
                    "has %s on %s): ids not admitted yet are counted from 0 again; rows "
                    "of admitted ids are all restored", saved, meta.get("num_shards"), want,
                    collection.num_shards if collection else None)
    return False


def _carry_totals(meta: dict, admission: dict) -> dict:
    """Empty admission state holding the checkpoint's filtered totals (on
    the first shard) where its sketches could not be restored."""
    totals = meta.get("admission_filtered") or {}
    out = {}
    for name, a in admission.items():
        f = a["filtered"]
        first = np.zeros(f.shape, np.int64)
        first[0] = totals.get(name, 0)
        out[name] = dict(a, filtered=jax.make_array_from_callback(
            f.shape, f.sharding, lambda idx, first=first: first[idx]))
    return out


def _with_host_rows(blocks: list[Rows], host: Rows, shards, num_shards: int) -> list[Rows]:
    """Each of this process's shards' resident rows (`blocks`, of the
    shards `shards`, in order) plus the rows of this process's host tier it
    owns."""
    owner = owner_of(host.keys, num_shards)
    return [Rows.concat([b, Rows(*(a[owner == i] for a in host))])
            for i, b in zip(shards, blocks)]


def _os_error(error: BaseException) -> tuple[int | None, str | None]:
    """(errno, path) of the OS error behind `error`, if any: an OSError in its
    chain, or TensorStore's ``Error writing local file "..." ...
    [os_error_code='28']`` (a ValueError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno:
            return error.errno, error.filename
        found = _TENSORSTORE_OS_ERROR.search(str(error))
        if found:
            return int(found.group(2)), found.group(1)
        error = error.__cause__ or error.__context__
    return None, None


def _describe(error: BaseException, limit: int = 400) -> str:
    """``Type: message`` of an error, cut to `limit` characters (TensorStore's
    messages carry whole driver specs)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + "..."
