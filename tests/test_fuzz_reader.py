"""The Criteo reader fuzzed with malformed lines (random bytes, NUL bytes,
CRLF, lines over the 64 KiB limit, too few or many fields, non-hex
categoricals, non-numeric dense values) among good ones, plain or gzip,
whole or truncated, and empty files.

Contract: with on_error='skip' every line is read and either parsed or
skipped and counted (the good lines always parsed); with 'raise' the first
bad line raises DataFormatError ``path:line: reason``; a truncated gzip raises
DataFormatError naming the file. Never any other exception.
HYPERECA_SLOW_TESTS=1 runs 10x the examples (pytest
--hypothesis-show-statistics prints how many each test tried)."""

import gzip
import os
import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jax_hypereca.data import criteo
from jax_hypereca.data.criteo import DataFormatError
from jax_hypereca.data.text_files import MAX_LINE_BYTES

SAMPLE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "criteo" / \
    "paddlerec_raw_sample_train.tsv"
SLOW = os.environ.get("HYPERECA_SLOW_TESTS") == "1"
SETTINGS = settings(max_examples=1000 if SLOW else 100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def good_lines() -> list[bytes]:
    if not SAMPLE.exists():
        pytest.skip(f"shared data not found at {SAMPLE}")
    return SAMPLE.read_bytes().rstrip(b"\n").split(b"\n")[:20]


def _replace_field(line: bytes, index: int, value: bytes) -> bytes:
    fields = line.split(b"\t")
    fields[index % len(fields)] = value
    return b"\t".join(fields)


@st.composite
def lines(draw, good: list[bytes]):
    """(line, known good) pairs; a line has no b"\\n" except random bytes'."""
    base = draw(st.sampled_from(good))
    kind = draw(st.sampled_from(["good", "crlf", "bytes", "nul", "long", "fields", "hex",
                                 "dense", "empty"]))
    if kind == "good":
        return base, True
    if kind == "crlf":
        return base + b"\r", True
    if kind == "bytes":
        return draw(st.binary(max_size=200)), False
    if kind == "nul":
        at = draw(st.integers(0, len(base)))
        return base[:at] + b"\x00" + base[at:], False
    if kind == "long":
        return b"1\t" + b"a" * draw(st.integers(MAX_LINE_BYTES - 2, MAX_LINE_BYTES + 100)), False
    if kind == "fields":
        n = draw(st.sampled_from([0, 1, 13, 39, 41, 60]))
        return b"\t".join([b"0"] * n), False
    if kind == "hex":
        junk = draw(st.text(st.characters(codec="utf-8", exclude_characters="\n\t"),
                            min_size=1, max_size=12)).encode()
        return _replace_field(base, 14 + draw(st.integers(0, 25)), junk), False
    if kind == "dense":
        junk = draw(st.sampled_from([b"x", b"1.5.2", b"nan", b"inf", b"1e999", b"--1", b"0x1"]))
        return _replace_field(base, 1 + draw(st.integers(0, 12)), junk), False
    return b"", False  # an empty line: no label


def _compose(drawn: list[tuple[bytes, bool]], trailing_newline: bool):
    """File bytes, the number of lines a reader sees, line numbers of known-good lines."""
    content, number, good_numbers = b"", 1, []
    for i, (line, good) in enumerate(drawn):
        if good:
            good_numbers.append(number)
        content += line + (b"\n" if i + 1 < len(drawn) or trailing_newline else b"")
        number += line.count(b"\n") + 1
    total = content.count(b"\n") + (0 if not content or content.endswith(b"\n") else 1)
    return content, total, good_numbers


def _is_long(line: bytes) -> bool:
    return len(line) + 1 > MAX_LINE_BYTES


@SETTINGS
@given(data=st.data())
def test_every_malformed_line_is_skipped_and_counted_or_raised(good_lines, data):
    drawn = data.draw(st.lists(lines(good_lines), max_size=12), label="lines")
    content, total, good_numbers = _compose(drawn, data.draw(st.booleans(), label="newline"))
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "day_0.tsv"
        path.write_bytes(content)
        if content.startswith(b"\x1f\x8b"):  # random bytes made a gzip header: a corrupt gzip
            with pytest.raises(DataFormatError, match=f"^{path}: "):
                sum(len(batch) for batch in criteo.iter_batches(path, 4))
            return
        stream = criteo.iter_batches(path, 4)
        rows = sum(len(batch) for batch in stream)
        stats = stream.stats
        assert stats.lines_read == total
        assert rows == total - stats.lines_skipped >= len(good_numbers)
        skipped_numbers = [line for _, line, _ in stats.examples]
        assert not set(skipped_numbers) & set(good_numbers)
        assert all(1 <= n <= total for n in skipped_numbers)
        assert all(len(reason) < 500 for _, _, reason in stats.examples)
        try:
            raised = sum(len(b) for b in criteo.iter_batches(path, 4, on_error="raise"))
        except DataFormatError as e:
            line = int(str(e).split(":")[1])
            assert str(e).startswith(f"{path}:{line}: ")
            assert line == min(skipped_numbers)
        else:
            assert stats.lines_skipped == 0 and raised == rows


@SETTINGS
@given(data=st.data())
def test_gzip_whole_or_truncated_reads_or_names_the_file(good_lines, data):
    drawn = data.draw(st.lists(lines(good_lines).filter(lambda x: not _is_long(x[0])),
                               max_size=8), label="lines")
    content, total, _ = _compose(drawn, True)
    packed = gzip.compress(content)
    cut = data.draw(st.integers(0, len(packed)), label="cut")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "day_0.gz"
        path.write_bytes(packed[:cut])
        stream = criteo.iter_batches(path, 4)
        try:
            rows = sum(len(batch) for batch in stream)
        except DataFormatError as e:
            assert cut < len(packed)
            assert str(e).startswith(f"{path}:")
            return
        if cut == len(packed):
            assert stream.stats.lines_read == total
        assert rows == stream.stats.lines_read - stream.stats.lines_skipped


def test_an_empty_file_gives_no_batches(tmp_path):
    for name, content in (("empty.tsv", b""), ("empty.gz", gzip.compress(b""))):
        (tmp_path / name).write_bytes(content)
        stream = criteo.iter_batches(tmp_path / name, 8)
        assert list(stream) == [] and stream.stats.lines_read == 0
