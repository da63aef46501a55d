"""Input files of the text readers: resolution, gzip, and lines of bounded length.

A line is read with ``readline(limit)``, so a corrupt file with a line of a
gigabyte (or no newline at all) never holds more than ``MAX_LINE_BYTES`` of
it: an over-long line comes back as a :class:`LongLine` (its length and first
bytes), which the reader reports as a malformed line, and the rest of it is
read and dropped in ``MAX_LINE_BYTES`` pieces.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

# Longest accepted line, terminator included.  A Criteo line is about 200
# bytes and an Avazu or Taobao line under 1 KiB; a longer line is malformed.
MAX_LINE_BYTES = 64 * 1024
LONG_LINE_HEAD = 100  # bytes of an over-long line kept for the error message

_GZIP_MAGIC = b"\x1f\x8b"


class LongLine(NamedTuple):
    """A line longer than ``MAX_LINE_BYTES``: its length in bytes and its first bytes."""

    length: int
    head: bytes

    def reason(self) -> str:
        """Why the line is malformed, for ``path:line: reason``."""
        head = repr(self.head.decode("utf-8", "replace"))
        return (f"line of {self.length} bytes is longer than the {MAX_LINE_BYTES}-byte limit "
                f"(jax_hypereca.data.text_files.MAX_LINE_BYTES); it starts {head}...")


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def resolve_files(path: str | os.PathLike) -> list[Path]:
    """The files to read for ``path``: the file itself, or a directory's files.

    A directory's regular, non-hidden files are taken in natural order
    (``day_2`` before ``day_10``).  Raises ``FileNotFoundError`` when the path
    does not exist or the directory holds no file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if not path.is_dir():
        return [path]
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=_natural_key)
    if not files:
        raise FileNotFoundError(f"no data files in directory: {path}")
    return files


def open_binary(path: Path):
    """Open ``path`` for reading bytes, decompressing gzip files (detected by magic bytes)."""
    with open(path, "rb") as probe:
        is_gzip = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def bounded_lines(handle) -> Iterator[bytes | LongLine]:
    """The lines of a binary file object; a line over ``MAX_LINE_BYTES`` as a :class:`LongLine`.

    Memory held per line is at most ``MAX_LINE_BYTES + 1`` bytes whatever the
    input.
    """
    limit = MAX_LINE_BYTES
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit:
            yield line
            continue
        length, piece = len(line), line
        while not piece.endswith(b"\n"):
            piece = handle.readline(limit)
            if not piece:
                break
            length += len(piece)
        yield LongLine(length, line[:LONG_LINE_HEAD])


def numbered_lines(path: Path, handle, error_type: type[ValueError]
                   ) -> Iterator[tuple[int, bytes | LongLine]]:
    """``(line number, line)`` of an open file from line 1 (see :func:`bounded_lines`).

    A gzip file that ends early or does not decompress raises ``error_type``
    naming the file and the last line read (instead of a bare EOFError /
    zlib.error).
    """
    number = 0
    try:
        for number, line in enumerate(bounded_lines(handle), start=1):
            yield number, line
    except EOFError as err:
        raise error_type(
            f"{path}: truncated: the gzip stream ended before its end-of-stream marker "
            f"after line {number} (the last line read; what followed is lost). Re-copy or "
            f"re-compress the file (`gzip -t {path}` checks it) or leave it out of the "
            f"input.") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise error_type(
            f"{path}: corrupt gzip data after line {number} (the last line read): {err}. "
            f"Re-copy or re-compress the file (`gzip -t {path}` checks it) or leave it out "
            f"of the input.") from err
