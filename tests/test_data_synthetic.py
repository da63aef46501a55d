"""Tests of the synthetic Criteo-like stream (spec v1) and of the metrics."""

import math

import numpy as np
import pytest

from jax_hypereca.data import metrics, synthetic
from jax_hypereca.data.synthetic import EVAL, TRAIN, SyntheticConfig, SyntheticCriteo

SPEC_DEFAULT_VOCAB = [
    1000000, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 1000000, 1000000, 345138, 10, 2209,
    11267, 128, 4, 974, 14, 1000000, 1000000, 1000000, 452104, 12606, 104, 35,
]
SMALL_VOCAB = [1, 2, 3, 4, 5, 62, 1000, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
               21, 22, 23, 24, 25]


@pytest.fixture(scope="module")
def gen():
    return SyntheticCriteo(SyntheticConfig())


def test_default_vocab_matches_spec():
    assert synthetic.default_vocab_sizes() == SPEC_DEFAULT_VOCAB
    assert sum(SPEC_DEFAULT_VOCAB) == 6914860
    assert SyntheticConfig().vocab_sizes == tuple(SPEC_DEFAULT_VOCAB)
    assert synthetic.default_vocab_sizes(100)[5] == 3
    assert max(synthetic.default_vocab_sizes(100)) == 100


def test_teacher_for_seed0(gen):
    assert gen.teacher.tolist() == [0, 1, 8, 9, 10, 13, 15, 18]


@pytest.mark.parametrize("stream, expected", [
    (TRAIN, "ae76e5342ef09eb77695f7b1816a49334e872480a3d0d2531ec933a64f81a01c"),
    (EVAL, "56081e44fe9932735b3429138a641616924821270421fba3c06a230ce77d19d0"),
])
def test_fingerprints_match_spec(gen, stream, expected):
    assert gen.fingerprint(4096, stream) == expected


def test_reference_check_passes():
    assert synthetic.reference_check() == []


def test_output_layout(gen):
    dense, ids, labels = gen.samples(5, 10)
    assert dense.dtype == np.float32 and dense.shape == (10, 13)
    assert ids.dtype == np.int64 and ids.shape == (10, 26, 1)
    assert labels.dtype == np.float32 and labels.shape == (10,)
    assert all(a.flags.c_contiguous for a in (dense, ids, labels))
    assert set(np.unique(labels)) <= {0.0, 1.0}
    assert (dense > 0).all()


def test_mean_ctr_of_first_65536_train_samples(gen):
    _, _, labels = gen.samples(0, 65536)
    assert round(float(labels.mean()), 4) == 0.2265


def test_bayes_auc_on_eval_stream(gen):
    _, _, labels = gen.eval_set(65536)
    logits = gen.true_logits(0, 65536, EVAL)
    assert abs(metrics.auc(labels, logits) - 0.80) < 0.01


def test_sample_independent_of_block_alignment(gen):
    whole = gen.samples(0, 2048)
    part = gen.samples(1000, 100)
    for a, b in zip(whole, part):
        np.testing.assert_array_equal(a[1000:1100], b)
    np.testing.assert_array_equal(gen.true_logits(1000, 100), gen.true_logits(0, 2048)[1000:1100])


def test_batching_convention_global_batch_is_split_invariant(gen):
    step = 1
    single = gen.batch(step, 0, 1, 8192)
    halves = [gen.batch(step, r, 2, 4096) for r in range(2)]
    for i in range(3):
        np.testing.assert_array_equal(single[i], np.concatenate([h[i] for h in halves]))
    np.testing.assert_array_equal(single[2], gen.samples(8192, 8192)[2])


def test_iterate_yields_consecutive_steps():
    gen = SyntheticCriteo(SyntheticConfig(vocab_sizes=SMALL_VOCAB))
    batches = gen.iterate(64, worker=1, num_workers=2, start_step=3)
    for step in (3, 4):
        expected = gen.batch(step, 1, 2, 64)
        for a, b in zip(next(batches), expected):
            np.testing.assert_array_equal(a, b)


def test_batch_rejects_bad_worker(gen):
    with pytest.raises(ValueError, match="worker"):
        gen.batch(0, 2, 2, 16)


@pytest.mark.parametrize("vocab", [1, 2, 3, 4, 5, 62, 1000, 1025, 4097])
def test_feistel_is_a_bijection(vocab):
    x = np.arange(vocab, dtype=np.uint64)
    half = np.full(vocab, synthetic.feistel_half_bits(vocab), np.uint64)
    keys = np.array([[synthetic.key(0, 0x5045524D, 3, t)] * vocab for t in range(4)], np.uint64)
    y = synthetic.feistel_permute(x, np.full(vocab, vocab, np.uint64), half, keys)
    assert sorted(y.tolist()) == list(range(vocab))
    if vocab >= 62:
        assert not np.array_equal(y, x)


def test_feistel_half_bits_rounds_up_to_even_width():
    assert [synthetic.feistel_half_bits(v) for v in (1, 2, 3, 4, 5, 8, 9, 62, 1000)] == \
        [1, 1, 1, 1, 2, 2, 2, 3, 5]


def test_ids_in_range_small_vocab():
    gen = SyntheticCriteo(SyntheticConfig(vocab_sizes=SMALL_VOCAB, seed=3))
    _, ids, _ = gen.samples(0, 4096)
    vocab = np.array(SMALL_VOCAB).reshape(1, 26, 1)
    assert (ids >= 0).all() and (ids < vocab).all()
    assert (ids[:, 0] == 0).all()
    assert len(np.unique(ids[:, 6])) > 200  # V=1000 is well covered


def test_ids_in_range_default_vocab(gen):
    _, ids, _ = gen.samples(0, 4096)
    assert (ids >= 0).all() and (ids < np.array(SPEC_DEFAULT_VOCAB).reshape(1, 26, 1)).all()


def test_hot_ids_are_scattered(gen):
    _, ids, _ = gen.samples(0, 4096)
    values, counts = np.unique(ids[:, 0, 0], return_counts=True)
    hottest = values[np.argmax(counts)]
    assert counts.max() > 50 and hottest > 100


def test_multi_hot_pooling_shape_and_determinism():
    config = SyntheticConfig(pooling=3, vocab_sizes=SMALL_VOCAB)
    a = SyntheticCriteo(config).samples(100, 300)
    b = SyntheticCriteo(config).samples(100, 300)
    assert a[1].shape == (300, 26, 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert (a[1] < np.array(SMALL_VOCAB).reshape(1, 26, 1)).all()
    assert not np.array_equal(a[1][:, :, 0], a[1][:, :, 1])


def test_alpha_zero_is_uniform():
    gen = SyntheticCriteo(SyntheticConfig(alpha=0.0, vocab_sizes=[10] * 26))
    _, ids, _ = gen.samples(0, 20000)
    counts = np.stack([np.bincount(ids[:, f, 0], minlength=10) for f in range(26)])
    assert np.abs(counts - 2000).max() < 250


def test_alpha_one_branch_is_continuous():
    u = np.linspace(0.0, 0.999999, 5001)
    vocab = np.float64(1000)
    exact = synthetic.zipf_ranks(u, vocab, 1.0)
    near = synthetic.zipf_ranks(u, vocab, 1.0 + 1e-9)
    assert np.mean(exact == near) > 0.99
    assert exact.min() == 0 and exact.max() <= 999
    assert (np.diff(exact.astype(np.int64)) >= 0).all()


def test_zipf_ranks_clamped_at_u_near_one():
    ranks = synthetic.zipf_ranks(np.array([0.0, 1.0 - 2**-53]), np.float64(5), 2.0)
    assert ranks.tolist() == [0, 4]


def test_mix64_and_key():
    assert int(synthetic.mix64(0)) == 0
    assert int(synthetic.mix64(1)) == 0x5692161D100B05E5  # splitmix64 finalizer of 1
    values = np.array([1, 2, 2**64 - 1], dtype=np.uint64)
    assert synthetic.mix64(values).tolist() == [int(synthetic.mix64(int(v))) for v in values]
    assert synthetic.key(-1) == synthetic.key(2**64 - 1)
    assert synthetic.key(0, 1) != synthetic.key(1, 0)


def test_preprocess_dense():
    dense = np.array([[0.0, 1.0, np.e - 1]], np.float32)
    out = synthetic.preprocess_dense(dense)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, math.log(2.0), 1.0]], rtol=1e-6)


def test_embedding_init(gen):
    table = gen.embedding_init(5, 3, 4)  # V_5 = 3
    assert table.shape == (3, 4) and table.dtype == np.float32
    assert np.abs(table).max() <= math.sqrt(1 / 3)
    np.testing.assert_array_equal(gen.embedding_init(5, np.array([1, 2]), 4), table[1:])
    assert not np.array_equal(gen.embedding_init(6, 3, 4), table)
    spread = gen.embedding_init(0, 1000, 8)
    assert abs(float(spread.mean())) < 1e-4 and spread.std() > 0.5 * math.sqrt(1 / 3e6)


@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_sizes": [10] * 25}, "26 entries"),
    ({"vocab_sizes": [10] * 25 + [0]}, r"vocab_sizes\[25\] must be >= 1"),
    ({"vocab_sizes": [10] * 25 + [2.5]}, r"vocab_sizes\[25\] must be an int"),
    ({"alpha": -0.5}, "alpha must be finite and >= 0"),
    ({"alpha": float("nan")}, "alpha"),
    ({"pooling": 0}, "pooling must be >= 1"),
    ({"seed": -1}, "seed must be >= 0"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**kwargs)


def test_config_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        SyntheticConfig(0)
    config = SyntheticConfig(seed=1)
    with pytest.raises(AttributeError):
        config.seed = 2


def test_samples_rejects_bad_stream(gen):
    with pytest.raises(ValueError, match="stream"):
        gen.samples(0, 1, stream=2)


# -- metrics ------------------------------------------------------------------


def _pairwise_auc(labels, scores):
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.3).astype(np.float32)
    scores = rng.integers(0, 20, 500).astype(np.float64)  # many ties
    assert metrics.auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)
    assert metrics.auc([0, 1], [0.2, 0.8]) == 1.0
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5
    assert math.isnan(metrics.auc([1, 1], [0.2, 0.8]))


def test_logloss_probabilities_and_logits_agree():
    labels = np.array([0, 1, 1, 0], np.float32)
    logits = np.array([-2.0, 0.5, 3.0, 1.0])
    probs = 1 / (1 + np.exp(-logits))
    expected = -np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
    assert metrics.logloss(labels, probs) == pytest.approx(expected, rel=1e-6)
    assert metrics.logloss(labels, logits, from_logits=True) == pytest.approx(expected, rel=1e-12)
    assert metrics.logloss([1, 0], [1000.0, -1000.0], from_logits=True) == 0.0
    assert math.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))
