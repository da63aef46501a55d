"""distinct_ids (jax_hypereca.ids): the sorted distinct ids of a batch
without the padding, against np.unique, over the full int64 range."""

from __future__ import annotations

import numpy as np
import pytest

from jax_hypereca.errors import PADDING_ID
from jax_hypereca.ids import distinct_ids


@pytest.mark.parametrize("seed", range(5))
def test_distinct_ids_is_np_unique_without_padding(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-(2**63), 2**63 - 1, (64, 3), dtype=np.int64)
    b = rng.choice(np.concatenate([a.reshape(-1)[:20], [PADDING_ID, 0, -(2**63), 2**63 - 1]]),
                   500)
    c = rng.integers(-5, 5, 37).astype(np.int32)  # narrower ints are widened
    got = distinct_ids(a, b, c)
    want = np.unique(np.concatenate([a.reshape(-1), b, c.astype(np.int64)]))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want[want != PADDING_ID])
    np.testing.assert_array_equal(distinct_ids(b), np.unique(b[b != PADDING_ID]))


def test_only_padding_or_nothing_gives_an_empty_array():
    for arrays in ([np.full((4, 2), PADDING_ID)], [np.zeros(0, np.int64)]):
        got = distinct_ids(*arrays)
        assert got.dtype == np.int64 and got.shape == (0,)
