"""Tests of the streaming Criteo, Avazu and Taobao readers on the real samples in shared/data."""

import csv
import gzip
import logging
import os
import shutil
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from jax_hypereca.data import criteo, csv_layouts
from jax_hypereca.data.criteo import CriteoFormatError, DataFormatError, missing_id


def _shared_data() -> Path:
    override = os.environ.get("HYPERECA_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = _shared_data()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture
def raw_train(data_dir):
    return data_dir / "criteo" / "paddlerec_raw_sample_train.tsv"


@pytest.fixture
def raw_test(data_dir):
    return data_dir / "criteo" / "paddlerec_raw_sample_test.tsv"


@pytest.fixture
def avazu(data_dir):
    return data_dir / "avazu" / "deepctr_avazu_sample.txt"


def read_all(iterator) -> criteo.Batch:
    return criteo.concat_batches(list(iterator))


def assert_same_rows(a: criteo.Batch, b: criteo.Batch):
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)


# -- Criteo -------------------------------------------------------------------


@pytest.mark.parametrize("name, rows, clicks", [
    ("deepctr_criteo_sample.txt", 200, 49),
    ("paddlerec_raw_sample_train.tsv", 100, 29),
    ("paddlerec_raw_sample_test.tsv", 100, 36),
])
def test_criteo_counts(data_dir, name, rows, clicks):
    stream = criteo.iter_batches(data_dir / "criteo" / name, 64)
    batches = list(stream)
    assert [len(b) for b in batches] == [64] * (rows // 64) + [rows % 64]
    batch = criteo.concat_batches(batches)
    assert batch.dense.dtype == np.float32 and batch.dense.shape == (rows, 13)
    assert batch.ids.dtype == np.int64 and batch.ids.shape == (rows, 26, 1)
    assert batch.labels.dtype == np.float32 and batch.labels.sum() == clicks
    assert stream.stats.lines_read == rows and stream.stats.lines_skipped == 0
    assert stream.features.dense == tuple(f"I{i}" for i in range(1, 14))
    assert stream.features.sparse == tuple(f"C{i}" for i in range(1, 27))


def test_criteo_tsv_values_and_padding(raw_test):
    lines = raw_test.read_bytes().split(b"\n")
    batch = read_all(criteo.iter_batches(raw_test, 1000, on_error="raise"))
    short = 0
    for row, line in enumerate(lines):
        fields = line.split(b"\t")
        short += len(fields) < 40
        fields += [b""] * (40 - len(fields))
        assert batch.labels[row] == int(fields[0])
        expected_dense = [float(v) if v else 0.0 for v in fields[1:14]]
        np.testing.assert_array_equal(batch.dense[row], expected_dense)
        expected_ids = [int(v, 16) if v else missing_id(f) for f, v in enumerate(fields[14:])]
        assert batch.ids[row, :, 0].tolist() == expected_ids
    assert short == 39


def test_criteo_csv_float_integers_and_missing(data_dir):
    batch = read_all(criteo.iter_batches(data_dir / "criteo" / "deepctr_criteo_sample.txt", 8))
    np.testing.assert_array_equal(batch.dense[0, :6], [0.0, 3.0, 260.0, 0.0, 17668.0, 0.0])
    assert batch.dense[1, 1] == -1.0
    assert batch.ids[0, 0, 0] == 0x05DB9164
    assert batch.ids[0, 18, 0] == missing_id(18) == (1 << 40) + 18
    assert (batch.ids >= 0).all()


def test_preprocess_dense_clamps_negatives():
    out = criteo.preprocess_dense(np.array([[-1.0, 0.0, np.e - 1]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.0, 1.0]], rtol=1e-6)


def test_gzip_input(tmp_path, raw_train):
    packed = tmp_path / "day_0.gz"
    packed.write_bytes(gzip.compress(raw_train.read_bytes()))
    assert_same_rows(read_all(criteo.iter_batches(packed, 33)), read_all(criteo.iter_batches(raw_train, 50)))


def test_directory_input_in_natural_order(tmp_path, raw_train, raw_test):
    lines = raw_train.read_bytes().split(b"\n") + raw_test.read_bytes().split(b"\n")
    parts = {"day_0": lines[:50], "day_1": lines[50:100], "day_2": lines[100:150], "day_10": lines[150:]}
    for name, part in parts.items():
        data = b"\n".join(part) + b"\n"
        if name == "day_1":
            (tmp_path / "day_1.gz").write_bytes(gzip.compress(data))
        else:
            (tmp_path / name).write_bytes(data)
    (tmp_path / ".hidden").write_bytes(b"junk\n")
    whole = read_all(criteo.iter_batches(tmp_path, 64, on_error="raise"))
    expected = criteo.concat_batches([read_all(criteo.iter_batches(p, 64)) for p in (raw_train, raw_test)])
    assert_same_rows(whole, expected)


@pytest.mark.parametrize("num_shards", [2, 3])
def test_sharding_covers_every_line_once(tmp_path, raw_train, raw_test, num_shards):
    shutil.copy(raw_train, tmp_path / "a.tsv")
    shutil.copy(raw_test, tmp_path / "b.tsv")
    whole = read_all(criteo.iter_batches(tmp_path, 1000))
    shards = [criteo.iter_batches(tmp_path, 16, shard_index=k, num_shards=num_shards)
              for k in range(num_shards)]
    for k, shard in enumerate(shards):
        part = read_all(shard)
        assert_same_rows(part, _rows(whole, np.arange(k, 200, num_shards)))
    assert sum(s.stats.lines_read for s in shards) == 200


def _rows(batch: criteo.Batch, index: np.ndarray) -> criteo.Batch:
    return criteo.Batch(batch.dense[index], batch.ids[index], batch.labels[index])


def test_drop_remainder(raw_train):
    batches = list(criteo.iter_batches(raw_train, 30, drop_remainder=True))
    assert [len(b) for b in batches] == [30, 30, 30]


def _with_bad_lines(tmp_path, raw_train):
    lines = raw_train.read_bytes().split(b"\n")
    good = lines[0].split(b"\t")
    bad = {
        3: b"\t".join(good + [b"extra"]),
        10: b"\t".join(good[:20] + [b"xyz12345"] + good[21:]),
        11: b"\t".join(good[:2] + [b"abc"] + good[3:]),
        40: b"\t".join([b"2"] + good[1:]),
        41: b"",
    }
    out = []
    for number, line in enumerate(lines, start=1):
        if number in bad:
            out.append(bad[number])
        out.append(line)
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"\n".join(out))
    return path


def test_malformed_line_raises_with_location(tmp_path, raw_train):
    path = _with_bad_lines(tmp_path, raw_train)
    stream = criteo.iter_batches(path, 8, on_error="raise")
    with pytest.raises(CriteoFormatError, match=rf"^{path}:3: 41 fields, expected at most 40$"):
        list(stream)
    assert issubclass(CriteoFormatError, ValueError)


@pytest.mark.parametrize("fields, reason", [
    (["1"] * 14 + ["zz"] * 26, "C1: not a hex id: 'zz'"),
    (["0", "x1"] + [""] * 38, "I1: not a number: 'x1'"),
    (["0.5"] + [""] * 39, "label: label must be 0 or 1: '0.5'"),
    ([""] * 40, "label: missing value"),
    (["0"] + [""] * 13 + ["123456789"] + [""] * 25, "C1: more than 8 hex digits: '123456789'"),
    (["0", "inf"] + [""] * 38, "I1: not finite: 'inf'"),
])
def test_each_kind_of_malformed_line(tmp_path, raw_train, fields, reason):
    path = tmp_path / "one.tsv"
    path.write_bytes(raw_train.read_bytes().split(b"\n")[0] + b"\n" + "\t".join(fields).encode() + b"\n")
    with pytest.raises(CriteoFormatError) as info:
        list(criteo.iter_batches(path, 8, on_error="raise"))
    assert str(info.value) == f"{path}:2: {reason}"


def test_malformed_lines_skipped_and_counted(tmp_path, raw_train, caplog):
    path = _with_bad_lines(tmp_path, raw_train)
    stream = criteo.iter_batches(path, 8)
    with caplog.at_level(logging.WARNING, logger="jax_hypereca.data.criteo"):
        batch = read_all(stream)
    assert_same_rows(batch, read_all(criteo.iter_batches(raw_train, 8)))
    assert stream.stats.lines_read == 105 and stream.stats.lines_skipped == 5
    assert [(line, reason.split(":")[0]) for _, line, reason in stream.stats.examples] == [
        (3, "41 fields, expected at most 40"), (11, "C7"), (13, "I2"), (43, "label"), (45, "label")]
    assert all(p == str(path) for p, _, _ in stream.stats.examples)
    assert len(caplog.records) == 5 and f"{path}:11:" in caplog.records[1].getMessage()
    assert stream.stats.as_metrics()["data/lines_skipped"] == 5


def test_warnings_are_rate_limited(tmp_path, raw_train, caplog):
    path = tmp_path / "many_bad.tsv"
    path.write_bytes(raw_train.read_bytes() + b"\n" + b"x\n" * 25)
    stream = criteo.iter_batches(path, 64)
    with caplog.at_level(logging.WARNING, logger="jax_hypereca.data.criteo"):
        assert len(read_all(stream)) == 100
    assert stream.stats.lines_skipped == 25 and len(stream.stats.examples) == 10
    assert len(caplog.records) == 11
    assert "25 malformed lines in total" in caplog.records[-1].getMessage()


def test_truncated_gzip_names_file_and_last_line(tmp_path, raw_train):
    data = raw_train.read_bytes()
    packed = gzip.compress(data)
    path = tmp_path / "day_0.gz"
    path.write_bytes(packed[:len(packed) // 2])
    # the lines a decompressor recovers from the truncated stream
    whole_lines = zlib.decompressobj(wbits=31).decompress(packed[:len(packed) // 2]).count(b"\n")
    assert 0 < whole_lines < 100
    with pytest.raises(CriteoFormatError) as info:
        list(criteo.iter_batches(path, 8))
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "truncated" in msg
    assert f"after line {whole_lines} " in msg
    assert isinstance(info.value.__cause__, EOFError)


def test_truncated_gzip_header_is_a_format_error(tmp_path, raw_train):
    path = tmp_path / "day_0.gz"
    path.write_bytes(gzip.compress(raw_train.read_bytes())[:12])
    with pytest.raises(DataFormatError, match=rf"^{path}: .*truncated.*after line 0 "):
        list(criteo.iter_batches(path, 8))


def test_huge_malformed_line_is_logged_as_a_short_excerpt(tmp_path, raw_train, caplog):
    path = tmp_path / "huge.tsv"
    good = raw_train.read_bytes().split(b"\n")[0]
    path.write_bytes(good + b"\n" + b"\xff" * (1 << 20) + b"\n")
    stream = criteo.iter_batches(path, 8)
    with caplog.at_level(logging.WARNING, logger="jax_hypereca.data.criteo"):
        assert len(read_all(stream)) == 1
    (record,) = caplog.records
    msg = record.getMessage()
    assert f"{path}:2: line of {(1 << 20) + 1} bytes is longer than the 65536-byte limit" in msg
    assert "MAX_LINE_BYTES" in msg and len(msg) < len(str(path)) + 400
    assert len(stream.stats.examples[0][2]) < 400


def test_a_long_cell_is_cut_to_an_excerpt(tmp_path, raw_train):
    path = tmp_path / "long_cell.tsv"
    path.write_bytes(b"\xff" * 5000 + b"\n")
    with pytest.raises(CriteoFormatError) as info:
        list(criteo.iter_batches(path, 8, on_error="raise"))
    assert str(info.value).startswith(f"{path}:1: label: not a number: ")
    assert str(info.value).endswith("... (5000 bytes)")


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_a_multi_megabyte_line_is_skipped_in_bounded_memory(tmp_path, raw_train, compress):
    """A line of 8 MB (no newline for megabytes, as in a corrupt file) is one
    skipped line reported with its length; the reader never holds it whole."""
    good = raw_train.read_bytes().rstrip(b"\n")
    huge = b"1\t" + b"ab" * (4 << 20)
    data = good + b"\n" + huge + b"\n" + good + b"\n"
    path = tmp_path / ("huge.gz" if compress else "huge.tsv")
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    stream = criteo.iter_batches(path, 64)
    peak = _peak_bytes(lambda: read_all(stream))
    assert peak < 16 << 20, f"peak {peak} bytes"
    assert stream.stats.lines_read == 201 and stream.stats.lines_skipped == 1
    ((where, line, reason),) = stream.stats.examples
    assert (where, line) == (str(path), 101)
    assert reason.startswith(f"line of {len(huge) + 1} bytes is longer than the 65536-byte limit")
    with pytest.raises(CriteoFormatError, match=rf"^{path}:101: line of {len(huge) + 1} bytes"):
        list(criteo.iter_batches(path, 64, on_error="raise"))


def test_one_long_cell_does_not_pad_the_whole_chunk(tmp_path, raw_train):
    """A 60 KB cell (under the line limit) among 4000 lines: a fixed-width array
    of the chunk would be 4000 x 40 x 60 KB = 9.6 GB; the reader stays small."""
    lines = raw_train.read_bytes().rstrip(b"\n").split(b"\n") * 40
    fields = lines[1].split(b"\t")
    fields[14] = b"a" * 60_000
    lines[1] = b"\t".join(fields)
    path = tmp_path / "long_cell.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    stream = criteo.iter_batches(path, 4096)
    batch = None

    def read():
        nonlocal batch
        batch = read_all(stream)
    peak = _peak_bytes(read)
    assert peak < 48 << 20, f"peak {peak} bytes"  # blocks of BLOCK_BYTES = 4 MiB
    assert len(batch) == 3999 and stream.stats.lines_skipped == 1
    assert stream.stats.examples[0][1:] == (2, "C1: more than 8 hex digits: '" + "a" * 99
                                            + "... (60000 bytes)")


def test_missing_path_raises_before_reading(tmp_path):
    missing = tmp_path / "nope" / "day_0"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        criteo.iter_batches(missing, 8)
    with pytest.raises(FileNotFoundError, match="no data files"):
        criteo.iter_batches(tmp_path, 8)


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 0}, {"shard_index": 2, "num_shards": 2}, {"on_error": "ignore"}])
def test_bad_arguments(raw_train, kwargs):
    args = {"batch_size": 8, **kwargs}
    with pytest.raises(ValueError):
        criteo.iter_batches(raw_train, **args)


def test_unknown_header_rejected(tmp_path, avazu):
    with pytest.raises(DataFormatError, match=":1: unexpected header"):
        list(csv_layouts.iter_taobao_batches(avazu, 8, max_sequence_length=2))


# -- Avazu ----------------------------------------------------------------------


def _reference_hash(value: bytes) -> int:
    """FNV-1a 64 + splitmix64 finalizer, then into [2**62, 2**63), in plain Python."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for byte in value:
        h = ((h ^ byte) * 0x100000001B3) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    h ^= h >> 31
    return (h >> 2) | (1 << 62)


def test_hash_strings_is_stable():
    values = [b"", b"a", b"1fbe01fe", b"2017-05-06 00:00:00", b"\xff\x00x"]
    assert csv_layouts.hash_strings(np.array(values, dtype=np.bytes_)).tolist() == \
        [_reference_hash(v) for v in values]


def test_avazu(avazu):
    stream = csv_layouts.iter_avazu_batches(avazu, 32)
    batch = read_all(stream)
    assert len(batch) == 100 and batch.labels.sum() == 20
    assert stream.features.sparse[0] == "hour" and stream.features.sparse[-1] == "hour_of_day"
    assert batch.ids.shape == (100, 23, 1) and batch.dense.shape == (100, 0)
    assert (batch.ids >= 0).all()
    assert (batch.ids[:, -1, 0] == 0).all()  # all rows are from hour 14102100
    with open(avazu, newline="") as handle:
        rows = list(csv.DictReader(handle))
    site_id = stream.features.sparse.index("site_id")
    assert batch.ids[:, site_id, 0].tolist() == [_reference_hash(r["site_id"].encode()) for r in rows]


def test_avazu_without_hour_of_day_and_sharded(avazu):
    whole = read_all(csv_layouts.iter_avazu_batches(avazu, 100, with_hour_of_day=False))
    assert whole.ids.shape == (100, 22, 1)
    shard = read_all(csv_layouts.iter_avazu_batches(avazu, 7, with_hour_of_day=False,
                                                    shard_index=1, num_shards=4))
    assert_same_rows(shard, _rows(whole, np.arange(1, 100, 4)))


def test_avazu_bad_click_reported(tmp_path, avazu):
    lines = avazu.read_bytes().splitlines()
    fields = lines[5].split(b",")
    fields[1] = b"yes"
    lines[5] = b",".join(fields)
    path = tmp_path / "avazu.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataFormatError, match=rf"^{path}:6: click: not a number: 'yes'$"):
        list(csv_layouts.iter_avazu_batches(path, 8, on_error="raise"))
    stream = csv_layouts.iter_avazu_batches(path, 8)
    assert len(read_all(stream)) == 99 and stream.stats.lines_skipped == 1


# -- Taobao ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fuxictr_taobaoad_train_sample.csv", "fuxictr_taobaoad_test_sample.csv"])
def test_taobao(data_dir, name):
    path = data_dir / "taobao" / name
    max_len = 2
    stream = csv_layouts.iter_taobao_batches(path, 40, max_sequence_length=max_len)
    batch = read_all(stream)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(batch) == 100 and batch.labels.sum() == 4
    assert stream.features.dense == ("price",) and stream.features.bags == ("click_sequence",)
    assert batch.ids.shape == (100, 16, 1) and (batch.ids >= 0).all()
    np.testing.assert_allclose(batch.dense[:, 0], [float(r["price"]) for r in rows], rtol=1e-6)
    bag = batch.bags["click_sequence"]
    assert bag.shape == (100, max_len)
    sequences = [[s for s in r["click_sequence"].split("^") if s] for r in rows]
    for row, seq in enumerate(sequences):
        kept = [_reference_hash(s.encode()) for s in seq[-max_len:]]
        assert bag[row].tolist() == kept + [-1] * (max_len - len(kept))
    assert stream.stats.bags_truncated == sum(len(s) > max_len for s in sequences)
    brand = stream.features.sparse.index("brand")
    assert [bool(r["brand"]) for r in rows] == (batch.ids[:, brand, 0] != missing_id(brand)).tolist()


def test_taobao_bad_sequence_length_argument(data_dir):
    with pytest.raises(ValueError, match="max_sequence_length"):
        csv_layouts.iter_taobao_batches(data_dir / "taobao", 8, max_sequence_length=0)
