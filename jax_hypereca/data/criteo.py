"""Streaming readers of click logs, and the Criteo layouts.

The first half of this module is the machinery every text layout shares
(``csv_layouts`` reuses it): per-process line sharding, chunked vectorised
parsing in blocks of bounded size, error reporting with ``path:line`` and
re-batching (input files and bounded lines are ``text_files``).  The second half defines the two Criteo
layouts:

* raw ``train.txt``/day files: ``label \\t I1..I13 \\t C1..C26`` (40 fields, no
  header; trailing empty fields may be dropped and are padded back);
* CSV with the header ``label,I1,...,I13,C1,...,C26`` (DeepCTR's sample),
  where integers may be written as floats (``260.0``).

Files are read line by line, a chunk at a time; a whole file is never loaded.

Id conventions shared by all layouts:

* real categorical ids are non-negative int64 (Criteo hex ids are below 2**32);
* a missing categorical value of feature ``f`` becomes ``missing_id(f) =
  2**40 + f``, which no real id can equal, and never -1/-2 (reserved by the
  embedding table);
* multi-hot bags are padded with ``PAD_ID = -1``, the table's padding id.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from .text_files import LongLine, numbered_lines, open_binary, resolve_files

logger = logging.getLogger(__name__)

MISSING_ID_BASE = 1 << 40
PAD_ID = -1
CHUNK_LINES = 4096
# A chunk also ends once its lines hold CHUNK_BYTES.  Its fields go into one
# fixed-width array (rows x columns x longest cell) when rows x columns x
# longest line is within CHUNK_ARRAY_BYTES (ordinary lines), else into blocks
# of consecutive rows each within BLOCK_BYTES (a row alone may exceed it, up
# to columns x MAX_LINE_BYTES): one long cell never pads a whole chunk.
CHUNK_BYTES = 16 << 20
CHUNK_ARRAY_BYTES = 64 << 20
BLOCK_BYTES = 4 << 20
MAX_LOGGED_ERRORS = 10
MAX_ERROR_EXAMPLES = 10
MAX_CELL_CHARS = 100
ON_ERROR_CHOICES = ("skip", "raise")

CRITEO_DENSE = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label",) + CRITEO_DENSE + CRITEO_SPARSE
MAX_HEX_DIGITS = 8

_HEX_DIGITS = b"0123456789abcdefABCDEF"
_INVALID_NIBBLE = 255
_HEX_LUT = np.full(256, _INVALID_NIBBLE, np.uint8)
for _char in _HEX_DIGITS:
    _HEX_LUT[_char] = int(chr(_char), 16)


class DataFormatError(ValueError):
    """A malformed input line; the message reads ``path:line: reason``."""


class CriteoFormatError(DataFormatError):
    """A malformed line in a Criteo file."""


class RowError(ValueError):
    """Raised by column parsers for a malformed row; the reason names the column.

    The reader adds ``path:line`` and raises a :class:`DataFormatError` or
    skips the line.  Other exceptions are bugs and propagate unchanged.
    """


def missing_id(feature: int) -> int:
    """The id standing for a missing value of categorical feature ``feature``."""
    return MISSING_ID_BASE + feature


@dataclasses.dataclass
class ReaderStats:
    """Counts of one reader (one shard), updated while it streams.

    ``lines_read`` counts the data lines of this shard (headers excluded),
    parsed or skipped; ``examples`` keeps the first few skipped lines as
    ``(path, line, reason)``; ``bags_truncated`` counts multi-hot values that
    were longer than the bag length and got truncated.
    """

    lines_read: int = 0
    lines_skipped: int = 0
    bags_truncated: int = 0
    examples: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)

    def as_metrics(self, prefix: str = "data/") -> dict[str, int]:
        """The counters as a flat dict for a training loop's metrics."""
        return {
            f"{prefix}lines_read": self.lines_read,
            f"{prefix}lines_skipped": self.lines_skipped,
            f"{prefix}bags_truncated": self.bags_truncated,
        }


@dataclasses.dataclass(frozen=True)
class FeatureNames:
    """Names of a layout's dense features, one-hot features and multi-hot bags, in array order."""

    dense: tuple[str, ...]
    sparse: tuple[str, ...]
    bags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Batch:
    """A batch of ``n`` parsed lines.

    ``dense`` float32 ``(n, D)`` raw values (missing -> 0), ``ids`` int64
    ``(n, F, 1)`` one-hot ids, ``labels`` float32 ``(n,)`` in {0, 1}, ``bags``
    name -> int64 ``(n, L)`` multi-hot ids padded with ``PAD_ID``.
    """

    dense: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    bags: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def slice(self, start: int, stop: int) -> Batch:
        """Rows ``[start, stop)`` (views, no copy)."""
        return Batch(
            self.dense[start:stop], self.ids[start:stop], self.labels[start:stop],
            {name: bag[start:stop] for name, bag in self.bags.items()},
        )


def concat_batches(batches: Sequence[Batch]) -> Batch:
    """Rows of ``batches`` one after the other."""
    if len(batches) == 1:
        return batches[0]
    return Batch(
        np.concatenate([b.dense for b in batches]),
        np.concatenate([b.ids for b in batches]),
        np.concatenate([b.labels for b in batches]),
        {name: np.concatenate([b.bags[name] for b in batches]) for name in batches[0].bags},
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """A delimited text layout.

    ``parse`` turns a bytes array ``(n, len(columns))`` of fields into a
    :class:`Batch` and the number of truncated bags; it raises
    :class:`RowError` with a reason naming the column when a row is
    malformed.  ``header``: each file starts with ``delimiter.join(columns)``.
    """

    name: str
    columns: tuple[str, ...]
    delimiter: bytes
    header: bool
    features: FeatureNames
    parse: Callable[[np.ndarray], tuple[Batch, int]]
    error_type: type[DataFormatError] = DataFormatError

    @property
    def header_line(self) -> bytes:
        """The header line, without line terminator."""
        return self.delimiter.join(c.encode() for c in self.columns)


# ---------------------------------------------------------------------------
# Column parsers (vectorised over a chunk; the error names the first bad cell)
# ---------------------------------------------------------------------------


def _cell_text(value: bytes) -> str:
    """The cell quoted for a message; past MAX_CELL_CHARS cut, with its length
    in bytes (a corrupt line can be megabytes of one undecodable cell)."""
    text = repr(value.decode("utf-8", "replace"))
    if len(text) <= MAX_CELL_CHARS:
        return text
    return f"{text[:MAX_CELL_CHARS]}... ({len(value)} bytes)"


def _first_bad(block: np.ndarray, bad: np.ndarray, names: Sequence[str], what: str,
               show_value: bool = True) -> str:
    row, col = (int(i[0]) for i in np.nonzero(bad))
    value = f": {_cell_text(block[row, col])}" if show_value else ""
    return f"{names[col]}: {what}{value}"


def _first_unparsable(block: np.ndarray, names: Sequence[str]) -> str:
    for (_, col), text in np.ndenumerate(block):
        try:
            float(text)
        except ValueError:
            return f"{names[col]}: not a number: {_cell_text(text)}"
    return "not a number"


def parse_numbers(block: np.ndarray, names: Sequence[str], *, allow_missing: bool = True) -> np.ndarray:
    """float64 values of a bytes block ``(n, k)``; empty cells give 0 when ``allow_missing``.

    Integers written as floats (``260.0``) are accepted; non-numeric or
    non-finite cells raise :class:`RowError`.
    """
    empty = block == b""
    if empty.any():
        if not allow_missing:
            raise RowError(_first_bad(block, empty, names, "missing value", show_value=False))
        block = np.where(empty, b"0", block)
    try:
        values = block.astype(np.float64)
    except ValueError:
        raise RowError(_first_unparsable(block, names)) from None
    finite = np.isfinite(values)
    if not finite.all():
        raise RowError(_first_bad(block, ~finite, names, "not finite"))
    return values


def parse_labels(column: np.ndarray, name: str) -> np.ndarray:
    """float32 click labels of a bytes column; each must be 0 or 1."""
    values = parse_numbers(column[:, None], (name,), allow_missing=False)
    bad = (values != 0.0) & (values != 1.0)
    if bad.any():
        raise RowError(_first_bad(column[:, None], bad, (name,), "label must be 0 or 1"))
    return values[:, 0].astype(np.float32)


def missing_ids(shape: tuple[int, ...], first_feature: int) -> np.ndarray:
    """``missing_id(f)`` broadcast over ``shape`` (features on the last axis)."""
    return np.broadcast_to(MISSING_ID_BASE + first_feature + np.arange(shape[-1], dtype=np.int64), shape)


def parse_hex_ids(block: np.ndarray, names: Sequence[str], first_feature: int = 0) -> np.ndarray:
    """int64 ids of a bytes block ``(n, k)`` of hexadecimal ids (at most 8 digits).

    Empty cells become ``missing_id(first_feature + column)``.
    """
    lengths = np.char.str_len(block)
    too_long = lengths > MAX_HEX_DIGITS
    if too_long.any():
        raise RowError(_first_bad(block, too_long, names, f"more than {MAX_HEX_DIGITS} hex digits"))
    codes = block.astype(f"S{MAX_HEX_DIGITS}", order="C").view(np.uint8).reshape(block.shape + (MAX_HEX_DIGITS,))
    nibbles = _HEX_LUT[codes]
    inside = np.arange(MAX_HEX_DIGITS) < lengths[..., None]
    bad = ((nibbles == _INVALID_NIBBLE) & inside).any(axis=-1)
    if bad.any():
        raise RowError(_first_bad(block, bad, names, "not a hex id"))
    values = np.zeros(block.shape, np.int64)
    for pos in range(MAX_HEX_DIGITS):
        values = np.where(inside[..., pos], values * 16 + nibbles[..., pos], values)
    return np.where(lengths == 0, missing_ids(block.shape, first_feature), values)


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------


class _ErrorPolicy:
    """Raises or counts-and-logs malformed lines, per ``on_error``."""

    def __init__(self, on_error: str, stats: ReaderStats):
        self.on_error = on_error
        self.stats = stats

    def report(self, error_type: type[DataFormatError], path: Path, line: int, reason: str) -> None:
        if self.on_error == "raise":
            raise error_type(f"{path}:{line}: {reason}")
        stats = self.stats
        stats.lines_skipped += 1
        if len(stats.examples) < MAX_ERROR_EXAMPLES:
            stats.examples.append((str(path), line, reason))
        if stats.lines_skipped <= MAX_LOGGED_ERRORS:
            logger.warning("skipping malformed line %s:%d: %s", path, line, reason)

    def summarize(self) -> None:
        skipped = self.stats.lines_skipped
        if skipped > MAX_LOGGED_ERRORS:
            logger.warning("skipped %d malformed lines in total (%d not logged individually)",
                           skipped, skipped - MAX_LOGGED_ERRORS)


def _choose_layout(layouts: Sequence[Layout], path: Path, first_line: bytes) -> Layout:
    """The layout whose header is ``first_line``, else the one without header."""
    stripped = b"" if isinstance(first_line, LongLine) else first_line.rstrip(b"\r\n")
    for layout in layouts:
        if layout.header and stripped == layout.header_line:
            return layout
    for layout in layouts:
        if not layout.header:
            return layout
    expected = " or ".join(repr(layout.header_line.decode()) for layout in layouts)
    raise layouts[0].error_type(f"{path}:1: unexpected header; expected {expected}")


def _split_fields(lines: Sequence[bytes | LongLine], layout: Layout):
    """Fields of each line padded to the layout's width; (rows, kept indices, errors,
    the longest kept line's length)."""
    width = len(layout.columns)
    rows, kept, errors, longest = [], [], [], 0
    for index, line in enumerate(lines):
        if isinstance(line, LongLine):
            errors.append((index, line.reason()))
            continue
        fields = line.rstrip(b"\r\n").split(layout.delimiter)
        if len(fields) > width:
            errors.append((index, f"{len(fields)} fields, expected at most {width}"))
            continue
        if len(fields) < width:
            fields.extend([b""] * (width - len(fields)))
        rows.append(fields)
        kept.append(index)
        longest = max(longest, len(line))
    return rows, kept, errors, longest


def _blocks(rows: Sequence[list[bytes]], width: int, longest_line: int
            ) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, fields array)`` of consecutive rows: all of them when
    CHUNK_ARRAY_BYTES allows, else arrays within BLOCK_BYTES (a single row may
    exceed it).  Row order is kept."""
    if not rows:
        return
    if len(rows) * width * longest_line <= CHUNK_ARRAY_BYTES:  # the usual case: no cell is longer
        yield 0, np.array(rows, dtype=np.bytes_).reshape(-1, width)
        return
    start, longest = 0, 1
    for index, fields in enumerate(rows):
        cell = max(1, max(map(len, fields)))
        grown = max(longest, cell)
        if index > start and (index + 1 - start) * width * grown > BLOCK_BYTES:
            yield start, np.array(rows[start:index], dtype=np.bytes_).reshape(-1, width)
            start, grown = index, cell
        longest = grown
    if start < len(rows):
        yield start, np.array(rows[start:], dtype=np.bytes_).reshape(-1, width)


def _parse_rows(fields: np.ndarray, rows: np.ndarray, layout: Layout,
                parsed: list[tuple[Batch, int]], errors: list[tuple[int, str]]) -> None:
    """Parse ``fields[rows]``; on a malformed row, bisect to isolate the bad rows."""
    try:
        parsed.append(layout.parse(fields[rows]))
    except RowError as err:
        if len(rows) == 1:
            errors.append((int(rows[0]), str(err)))
            return
        middle = len(rows) // 2
        _parse_rows(fields, rows[:middle], layout, parsed, errors)
        _parse_rows(fields, rows[middle:], layout, parsed, errors)


def _parse_chunk(rows: Sequence[list[bytes]], longest_line: int, layout: Layout):
    """Parse a chunk's good rows; returns ``(batch or None, truncated bags, [(row, reason)])``."""
    parsed: list[tuple[Batch, int]] = []
    errors: list[tuple[int, str]] = []
    for start, fields in _blocks(rows, len(layout.columns), longest_line):
        block_errors: list[tuple[int, str]] = []
        _parse_rows(fields, np.arange(len(fields)), layout, parsed, block_errors)
        errors.extend((start + row, reason) for row, reason in block_errors)
    if not parsed:
        return None, 0, errors
    batch = concat_batches([batch for batch, _ in parsed])
    return batch, sum(truncated for _, truncated in parsed), errors


def _process_chunk(path: Path, layout: Layout, line_numbers: list[int],
                   lines: list[bytes | LongLine], policy: _ErrorPolicy) -> Batch | None:
    """Parse one chunk of lines; malformed ones are reported in line order."""
    rows, kept, split_errors, longest_line = _split_fields(lines, layout)
    batch, truncated, parse_errors = _parse_chunk(rows, longest_line, layout)
    errors = split_errors + [(kept[row], reason) for row, reason in parse_errors]
    for index, reason in sorted(errors):
        policy.report(layout.error_type, path, line_numbers[index], reason)
    policy.stats.lines_read += len(lines)
    policy.stats.bags_truncated += truncated
    return batch


def _shard_chunks(files: Sequence[Path], layouts: Sequence[Layout], shard_index: int,
                  num_shards: int) -> Iterator[tuple[Path, Layout, list[int], list[bytes]]]:
    """Chunks ``(path, layout, line numbers, lines)`` of this shard's data lines.

    Data line ``i`` (counted over all files, headers excluded) belongs to
    shard ``i % num_shards``.  A chunk never spans two files and ends at
    CHUNK_LINES lines or CHUNK_BYTES bytes.
    """
    data_line = 0
    for path in files:
        with open_binary(path) as handle:
            numbered = numbered_lines(path, handle, layouts[0].error_type)
            first = next(numbered, None)
            if first is None:
                continue
            layout = _choose_layout(layouts, path, first[1])
            if not layout.header:
                numbered = itertools.chain([first], numbered)
            line_numbers, lines, size = [], [], 0
            for number, line in numbered:
                if data_line % num_shards == shard_index:
                    line_numbers.append(number)
                    lines.append(line)
                    size += len(line) if isinstance(line, bytes) else 0
                    if len(lines) == CHUNK_LINES or size >= CHUNK_BYTES:
                        yield path, layout, line_numbers, lines
                        line_numbers, lines, size = [], [], 0
                data_line += 1
            if lines:
                yield path, layout, line_numbers, lines


def _rebatch(batches: Iterable[Batch], batch_size: int, drop_remainder: bool) -> Iterator[Batch]:
    """Batches of exactly ``batch_size`` rows (and a last smaller one unless dropped)."""
    pending: list[Batch] = []
    size = 0
    for batch in batches:
        pending.append(batch)
        size += len(batch)
        if size < batch_size:
            continue
        merged = concat_batches(pending)
        start = 0
        while size - start >= batch_size:
            yield merged.slice(start, start + batch_size)
            start += batch_size
        pending = [merged.slice(start, size)] if start < size else []
        size -= start
    if size and not drop_remainder:
        yield concat_batches(pending)


class BatchIterator:
    """Iterator of :class:`Batch` with the layout's feature names and live :class:`ReaderStats`."""

    def __init__(self, batches: Iterator[Batch], features: FeatureNames, stats: ReaderStats):
        self._batches = batches
        self.features = features
        self.stats = stats

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        return next(self._batches)


def stream_batches(path: str | os.PathLike, layouts: Sequence[Layout], batch_size: int, *,
                   shard_index: int = 0, num_shards: int = 1, drop_remainder: bool = False,
                   on_error: str = "skip") -> BatchIterator:
    """Stream batches of ``path`` (file or directory, plain or gzip) in one of ``layouts``.

    Each file's layout is the one whose header is its first line, else the
    headerless one.  Arguments are checked and the files resolved before
    anything is read (a missing path raises ``FileNotFoundError``).  See
    :func:`iter_batches` for sharding and error handling.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(f"need 0 <= shard_index < num_shards, got {shard_index} and {num_shards}")
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    files = resolve_files(path)
    stats = ReaderStats()
    policy = _ErrorPolicy(on_error, stats)

    def parsed() -> Iterator[Batch]:
        for chunk in _shard_chunks(files, layouts, shard_index, num_shards):
            batch = _process_chunk(*chunk, policy)
            if batch is not None:
                yield batch
        policy.summarize()

    return BatchIterator(_rebatch(parsed(), batch_size, drop_remainder), layouts[0].features, stats)


# ---------------------------------------------------------------------------
# Criteo
# ---------------------------------------------------------------------------


def _parse_criteo(fields: np.ndarray) -> tuple[Batch, int]:
    labels = parse_labels(fields[:, 0], "label")
    dense = parse_numbers(fields[:, 1:14], CRITEO_DENSE).astype(np.float32)
    ids = parse_hex_ids(fields[:, 14:], CRITEO_SPARSE)
    return Batch(dense, ids[:, :, None], labels), 0


CRITEO_FEATURES = FeatureNames(dense=CRITEO_DENSE, sparse=CRITEO_SPARSE)
CRITEO_TSV = Layout("criteo-tsv", CRITEO_COLUMNS, b"\t", False, CRITEO_FEATURES,
                    _parse_criteo, CriteoFormatError)
CRITEO_CSV = Layout("criteo-csv", CRITEO_COLUMNS, b",", True, CRITEO_FEATURES,
                    _parse_criteo, CriteoFormatError)


def iter_batches(path: str | os.PathLike, batch_size: int, *, shard_index: int = 0,
                 num_shards: int = 1, drop_remainder: bool = False,
                 on_error: str = "skip") -> BatchIterator:
    """Stream Criteo batches from a file or a directory of (optionally gzipped) files.

    A file whose first line is ``label,I1,...,C26`` is read as CSV, any other
    as raw tab-separated Criteo (missing trailing fields padded).  Batches hold
    raw dense values (missing -> 0; apply :func:`preprocess_dense`), hex ids
    as int64 ``(n, 26, 1)`` (missing -> ``missing_id(f)``) and labels.

    Sharding: data line ``i`` (over all files, in order) goes to shard
    ``i % num_shards``, so ``num_shards`` processes read every line once.

    Malformed lines (too many fields, bad label, non-numeric integer, non-hex
    categorical, a line over ``text_files.MAX_LINE_BYTES`` = 64 KiB, reported
    with its length): ``on_error='raise'`` raises :class:`CriteoFormatError` with
    ``path:line: reason``; ``'skip'`` drops them, logs the first ones and counts
    them in the returned iterator's ``stats``.
    """
    return stream_batches(path, (CRITEO_TSV, CRITEO_CSV), batch_size, shard_index=shard_index,
                          num_shards=num_shards, drop_remainder=drop_remainder, on_error=on_error)


def preprocess_dense(dense: np.ndarray) -> np.ndarray:
    """The usual Criteo dense transform ``float32(log1p(max(x, 0)))``.

    Criteo integer features can be negative (e.g. ``I2 = -1``); they are
    clamped to 0 first, since ``log1p`` is undefined at or below -1.
    """
    return np.log1p(np.maximum(np.asarray(dense, np.float32), 0.0)).astype(np.float32)
