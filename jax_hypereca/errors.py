"""Errors raised on the host, with the numbers and the setting to change.

A custom call that failed at run time would leave the caller's donated table
deleted, so value-dependent problems never fail inside the op: they come back
as status outputs (the affected rows untouched) and are turned into these
exceptions here, after the step.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jax_hypereca._native import CONSTANTS

EMPTY_KEY: int = CONSTANTS["EMPTY_KEY"]
ERASED_KEY: int = CONSTANTS["ERASED_KEY"]
PADDING_ID: int = CONSTANTS["PADDING_KEY"]
_INSERT = CONSTANTS["INSERT_STATUS"]
_APPLY = CONSTANTS["APPLY_STATUS"]


class HyperecaError(RuntimeError):
    """Base class of the errors jax_hypereca raises about table contents."""


class ReservedIdError(HyperecaError, ValueError):
    """An input id equals a reserved key value; it was not stored."""


class TableFullError(HyperecaError):
    """Rows could not be placed: their buckets were full of pinned rows, the
    eviction outputs were too small, or a grow/import found no room."""


class NonFiniteGradientError(HyperecaError, FloatingPointError):
    """Gradient rows holding NaN or Inf were skipped (the rows are untouched)."""


class SlotOutOfRangeError(HyperecaError, IndexError):
    """Slots outside [-1, rows) were given to gather; their rows came back zero."""


def check_ids(ids, *, where: str = "ids") -> np.ndarray:
    """Checks concrete (numpy) ids before dispatch: integer dtype, no reserved
    value other than the padding id. Returns them as int64."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{where} must be integers (int64 ids), got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 1 << 63:
        raise ValueError(f"{where}: uint64 ids >= 2**63 do not fit int64")
    arr = arr.astype(np.int64, copy=False)
    bad = np.flatnonzero(arr.reshape(-1) == ERASED_KEY)
    if bad.size:
        pos = np.unravel_index(bad[0], arr.shape)
        raise ReservedIdError(
            f"{where}[{', '.join(map(str, pos))}] = {ERASED_KEY} is the reserved ERASED_KEY "
            f"({bad.size} such ids in all); it cannot be stored. Ids may be any int64 except "
            f"{ERASED_KEY}; {PADDING_ID} is the padding id and is skipped.")
    return arr


def insert_status_dict(status) -> dict[str, int]:
    """Per-call find_or_insert status as a dict of ints."""
    s = np.asarray(status)
    return {name: int(s[i]) for name, i in _INSERT.items()}


def apply_status_dict(status) -> dict[str, int]:
    """Per-call apply_gradients status as a dict of ints."""
    s = np.asarray(status)
    return {name: int(s[i]) for name, i in _APPLY.items()}


def raise_for_insert_status(table: str, status: Mapping[str, int], *, capacity: int,
                            bucket_size: int, max_evictions: int, size: int | None = None,
                            where: str | None = None):
    """Raises on reserved ids or refused inserts reported by find_or_insert
    (or on reserved ids a lookup reported, `where` naming the call)."""
    if status["reserved"]:
        raise ReservedIdError(
            f"{where + ': ' if where else ''}table {table!r}: {status['reserved']} of "
            f"{status['queries']} ids equal the "
            f"reserved ERASED_KEY {ERASED_KEY}; they were not stored and got no row. Remove "
            f"them from the input ({PADDING_ID} is the padding id).")
    if status["failed"]:
        held = "" if size is None else f", {size} rows resident"
        raise TableFullError(
            f"table {table!r}: {status['failed']} of {status['queries']} inserts refused "
            f"(capacity {capacity}{held}, bucket_size {bucket_size}, {status['evicted']} "
            f"evictions this call, max_evictions {max_evictions}): their buckets held only "
            f"rows pinned at the current step, or the eviction outputs were full. Those ids "
            f"got no row (slot -1). Raise TableSpec.capacity (or grow the table), raise "
            f"max_evictions, or look up fewer distinct ids per step.")


def raise_for_apply_status(table: str, status: Mapping[str, int]):
    """Raises when apply_gradients skipped rows with non-finite gradients."""
    if status["nonfinite"]:
        of = f" of {status['unique_rows']}" if status.get("unique_rows") is not None else ""
        raise NonFiniteGradientError(
            f"table {table!r}: {status['nonfinite']}{of} gradient rows held NaN or Inf and "
            f"were skipped (those rows and their optimizer state are unchanged). Check the "
            f"loss for overflow, lower the learning rate, or clip.")
    if status.get("bad_slots"):
        raise HyperecaError(
            f"table {table!r}: {status['bad_slots']} gradient slots were outside the table "
            f"and ignored; slots must come from this table's find_or_insert.")


def raise_for_gather_status(bad_slots, slots, *, rows: int, table: str | None = None):
    """Raises SlotOutOfRangeError when gather counted slots outside [-1, rows)
    (`bad_slots`, its second output); names the first such slot of `slots`."""
    bad = int(np.asarray(bad_slots))
    if not bad:
        return
    s = np.asarray(slots).reshape(-1)
    where = np.flatnonzero((s < -1) | (s >= rows))
    first = f"slots[{where[0]}] = {s[where[0]]}; " if where.size else ""
    name = f"table {table!r}: " if table else ""
    raise SlotOutOfRangeError(
        f"{name}gather: {bad} of {s.size} slots are outside the table's {rows} rows "
        f"({first}valid slots are 0..{rows - 1}, and -1 for no row); their rows came back "
        f"as zeros. Pass slots from this table's find_or_insert or find_slots, not ids or "
        f"another table's slots.")
