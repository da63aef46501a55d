"""Deterministic synthetic Criteo-like click stream (spec version 1), numpy only.

This module implements ``shared/data/synthetic_criteo_spec.md`` exactly, so the
stream it produces is bit-identical to the reference stream every harness is
measured on (:meth:`SyntheticCriteo.fingerprint` checks that).

* 13 log-normal dense features and 26 Zipf-like categorical features whose
  ranks are scattered over ``[0, V_f)`` by a per-feature Feistel bijection.
* Labels come from a planted logistic "teacher" over the latent normals of the
  dense features and per-id effects of 8 categorical features.
* Sample ``i`` of a stream depends only on ``(seed, stream, i // BLOCK)``, so it
  is the same whatever the batch size, the number of workers or the alignment
  of the requested range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator, Sequence

import numpy as np

from jax_hypereca.hashing import mix64

SPEC_VERSION = 1
BLOCK = 1024
NUM_DENSE = 13
NUM_SPARSE = 26
TRAIN = 0
EVAL = 1

DENSE_SCALE = 0.9
SPARSE_SCALE = 1.2
N_TEACHER_SPARSE = 8
BIAS = -1.6

# Criteo Terabyte table sizes as in TorchRec's DLRM example.
CRITEO_1TB_VOCAB = (
    45833188, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 29275261, 1572176,
    345138, 10, 2209, 11267, 128, 4, 974, 14, 48937457, 11316796, 40094537,
    452104, 12606, 104, 35,
)
CRITEO_KAGGLE_VOCAB = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
    3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
    142572,
)

# Published check values for seed 0, default vocabulary, alpha 1.05, pooling 1.
TRAIN_FINGERPRINT = "ae76e5342ef09eb77695f7b1816a49334e872480a3d0d2531ec933a64f81a01c"
EVAL_FINGERPRINT = "56081e44fe9932735b3429138a641616924821270421fba3c06a230ce77d19d0"
TEACHER_SEED0 = (0, 1, 8, 9, 10, 13, 15, 18)

_PARAMS_TAG = 7919
_PERM_TAG = 0x5045524D  # "PERM"
_EFFECT_TAG = 0x45464646  # "EFFF"
_EMBED_TAG = 0x454D4249  # "EMBI"
_FEISTEL_ROUNDS = 4
_KEY_START = 0x9E3779B97F4A7C15
_U64 = 1 << 64
# Blocks generated together by one vectorised pass (bounds peak memory).
_BLOCKS_PER_PASS = 64


def default_vocab_sizes(max_vocab: int = 1_000_000) -> list[int]:
    """Criteo Terabyte table sizes, each capped at ``max_vocab`` rows."""
    if max_vocab < 1:
        raise ValueError(f"max_vocab must be >= 1, got {max_vocab}")
    return [min(v, max_vocab) for v in CRITEO_1TB_VOCAB]


def key(*parts: int) -> int:
    """Fold integers into a 64-bit key: ``h = mix64(h ^ (p mod 2**64))`` per part."""
    h = _KEY_START
    for p in parts:
        h = int(mix64(h ^ (int(p) % _U64)))
    return h


def unit_float(h: np.ndarray) -> np.ndarray:
    """``U(h) = (h >> 11) * 2**-53``: uint64 hashes to float64 in ``[0, 1)``."""
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)) * 2.0**-53


def feistel_half_bits(vocab_size: int) -> int:
    """Half width ``h`` of the Feistel network permuting ``[0, vocab_size)``.

    ``b = bit_length(V - 1)`` rounded up to an even number, at least 2; ``h = b/2``.
    """
    bits = max(2, (vocab_size - 1).bit_length())
    return (bits + 1) // 2


def _feistel_rounds(x: np.ndarray, half: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Apply the 4 Feistel rounds elementwise (``half`` and ``keys[t]`` broadcast with x)."""
    mask = (np.uint64(1) << half) - np.uint64(1)
    for t in range(_FEISTEL_ROUNDS):
        left, right = x >> half, x & mask
        x = (right << half) | (left ^ (mix64(right ^ keys[t]) & mask))
    return x


def feistel_permute(x: np.ndarray, vocab: np.ndarray, half: np.ndarray,
                    keys: np.ndarray) -> np.ndarray:
    """Permute ranks ``x`` (uint64, each below its ``vocab``) with cycle walking.

    ``vocab`` and ``half`` broadcast against ``x``, ``keys`` against
    ``(4,) + x.shape`` (round first).  Elements that land outside
    ``[0, vocab)`` go through the network again until they land inside; only
    those are recomputed.
    """
    y = _feistel_rounds(x, half, keys)
    vocab = np.broadcast_to(vocab, y.shape)
    half = np.broadcast_to(half, y.shape)
    keys = np.broadcast_to(keys, (_FEISTEL_ROUNDS,) + y.shape)
    todo = np.nonzero(y >= vocab)
    while todo[0].size:
        walked = _feistel_rounds(y[todo], half[todo], keys[(slice(None),) + todo])
        y[todo] = walked
        outside = walked >= vocab[todo]
        todo = tuple(index[outside] for index in todo)
    return y


def zipf_ranks(u: np.ndarray, vocab: np.ndarray, alpha: float) -> np.ndarray:
    """Ranks in ``[0, V)`` from uniforms ``u`` via the truncated power law of the spec."""
    v1 = vocab + 1.0
    if alpha == 1.0:
        x = v1**u
    else:
        a1 = 1.0 - alpha
        x = (1.0 + u * (v1**a1 - 1.0)) ** (1.0 / a1)
    r = np.minimum(np.floor(x) - 1.0, vocab - 1.0)
    return np.maximum(r, 0.0).astype(np.uint64)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    """Parameters of the synthetic stream (see the spec's "Config" section).

    ``vocab_sizes=None`` means :func:`default_vocab_sizes`; it is stored as a
    tuple of 26 ints.  Invalid values raise ``ValueError``.
    """

    seed: int = 0
    vocab_sizes: Sequence[int] | None = None
    alpha: float = 1.05
    pooling: int = 1

    def __post_init__(self):
        _check_int("seed", self.seed, 0)
        _check_int("pooling", self.pooling, 1)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float, np.floating)):
            raise ValueError(f"alpha must be a number, got {self.alpha!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {self.alpha}")
        sizes = default_vocab_sizes() if self.vocab_sizes is None else list(self.vocab_sizes)
        if len(sizes) != NUM_SPARSE:
            raise ValueError(f"vocab_sizes must have {NUM_SPARSE} entries, got {len(sizes)}")
        for f, v in enumerate(sizes):
            _check_int(f"vocab_sizes[{f}]", v, 1)
        object.__setattr__(self, "vocab_sizes", tuple(int(v) for v in sizes))
        object.__setattr__(self, "alpha", float(self.alpha))


class SyntheticCriteo:
    """The synthetic click stream for one :class:`SyntheticConfig`.

    The fixed parameters (dense log-normal parameters, teacher weights and
    features, Feistel and effect keys) are computed once here; samples are
    generated on demand, block by block, and nothing large is cached.
    """

    def __init__(self, config: SyntheticConfig | None = None):
        self.config = config if config is not None else SyntheticConfig()
        seed = self.config.seed
        prm = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _PARAMS_TAG])))
        self.mu = prm.uniform(0.0, 2.0, NUM_DENSE)
        self.sigma = prm.uniform(0.5, 1.5, NUM_DENSE)
        self.w_dense = prm.normal(0.0, 1.0, NUM_DENSE) * (DENSE_SCALE / math.sqrt(NUM_DENSE))
        self.teacher = np.sort(prm.choice(NUM_SPARSE, N_TEACHER_SPARSE, replace=False))
        self.vocab_sizes = np.array(self.config.vocab_sizes, dtype=np.uint64)
        self.perm_keys = np.array(
            [[key(seed, _PERM_TAG, f, t) for f in range(NUM_SPARSE)] for t in range(_FEISTEL_ROUNDS)],
            dtype=np.uint64,
        )  # (4, 26)
        self.perm_half_bits = np.array(
            [feistel_half_bits(v) for v in self.config.vocab_sizes], dtype=np.uint64
        )
        self.effect_keys = np.array(
            [key(seed, _EFFECT_TAG, f) for f in range(NUM_SPARSE)], dtype=np.uint64
        )

    # -- per-block randomness -------------------------------------------------

    def _draw_block(self, stream: int, k: int):
        """The block's latent normals, id uniforms and label uniforms, in spec order."""
        ss = np.random.SeedSequence([self.config.seed, stream, k])
        rng = np.random.Generator(np.random.PCG64(ss))
        z = rng.standard_normal((BLOCK, NUM_DENSE))
        u_ids = rng.random((BLOCK, NUM_SPARSE, self.config.pooling))
        u_lab = rng.random(BLOCK)
        return z, u_ids, u_lab

    # -- deterministic transforms ---------------------------------------------

    def permute(self, ranks: np.ndarray) -> np.ndarray:
        """``PERM_f`` applied to ranks of shape ``(n, 26, P)`` (feature on axis 1)."""
        per_feature = (1, NUM_SPARSE, 1)
        return feistel_permute(
            ranks.astype(np.uint64),
            self.vocab_sizes.reshape(per_feature),
            self.perm_half_bits.reshape(per_feature),
            self.perm_keys.reshape((_FEISTEL_ROUNDS,) + per_feature),
        )

    def effects(self, ids: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Per-id teacher effects ``eff_f(id)`` for ids of shape ``(n, len(features), P)``."""
        k = self.effect_keys[features].reshape(1, -1, 1)
        h = mix64(ids.astype(np.uint64) ^ k)
        return math.sqrt(3.0) * (2.0 * unit_float(h) - 1.0)

    def _from_uniforms(self, z, u_ids, u_lab):
        """Dense, ids, labels and true logits from the block randomness (any number of rows)."""
        dense = np.exp(self.mu + self.sigma * z).astype(np.float32)
        vocab = self.vocab_sizes.astype(np.float64).reshape(1, NUM_SPARSE, 1)
        ids = self.permute(zipf_ranks(u_ids, vocab, self.config.alpha)).astype(np.int64)
        sparse = self.effects(ids[:, self.teacher, :], self.teacher).mean(axis=-1).sum(axis=1)
        logits = BIAS + z @ self.w_dense + SPARSE_SCALE / math.sqrt(N_TEACHER_SPARSE) * sparse
        labels = (u_lab < 1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return dense, ids, labels, logits

    def _generate(self, start: int, count: int, stream: int):
        """Samples ``[start, start + count)`` plus their true logits."""
        _check_int("start", start, 0)
        _check_int("count", count, 0)
        if stream not in (TRAIN, EVAL):
            raise ValueError(f"stream must be TRAIN (0) or EVAL (1), got {stream!r}")
        p = self.config.pooling
        dense = np.empty((count, NUM_DENSE), np.float32)
        ids = np.empty((count, NUM_SPARSE, p), np.int64)
        labels = np.empty(count, np.float32)
        logits = np.empty(count, np.float64)
        stop = start + count
        first = start // BLOCK
        last = -(-stop // BLOCK) if count else first
        for k0 in range(first, last, _BLOCKS_PER_PASS):
            blocks = range(k0, min(k0 + _BLOCKS_PER_PASS, last))
            draws = [self._draw_block(stream, k) for k in blocks]
            parts = self._from_uniforms(*(np.concatenate(d) for d in zip(*draws)))
            lo = max(start, k0 * BLOCK)
            hi = min(stop, (blocks[-1] + 1) * BLOCK)
            src = slice(lo - k0 * BLOCK, hi - k0 * BLOCK)
            dst = slice(lo - start, hi - start)
            for out, part in zip((dense, ids, labels, logits), parts):
                out[dst] = part[src]
        return dense, ids, labels, logits

    # -- public sampling API --------------------------------------------------

    def samples(self, start: int, count: int, stream: int = TRAIN):
        """Samples ``[start, start + count)`` of ``stream``.

        Returns ``(dense, ids, labels)``: float32 ``(n, 13)`` raw dense values
        (before :func:`preprocess_dense`), int64 ``(n, 26, P)`` ids with
        ``0 <= ids[:, f] < V_f``, float32 ``(n,)`` labels in {0, 1}.
        """
        dense, ids, labels, _ = self._generate(start, count, stream)
        return dense, ids, labels

    def true_logits(self, start: int, count: int, stream: int = TRAIN) -> np.ndarray:
        """The teacher's float64 logits for samples ``[start, start + count)``.

        ``sigmoid(logit)`` is the true click probability, so these scores give
        the Bayes-optimal AUC.
        """
        return self._generate(start, count, stream)[3]

    def batch(self, step: int, worker: int, num_workers: int, batch_size: int,
              stream: int = TRAIN):
        """Worker ``worker``'s batch of global step ``step``.

        It is samples ``[(step*W + worker)*B, (step*W + worker + 1)*B)``, so the
        global batch of a step is the same for any split ``W * B``.
        """
        _check_int("num_workers", num_workers, 1)
        _check_int("batch_size", batch_size, 1)
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker must be in [0, {num_workers}), got {worker}")
        _check_int("step", step, 0)
        start = (step * num_workers + worker) * batch_size
        return self.samples(start, batch_size, stream)

    def iterate(self, batch_size: int, worker: int = 0, num_workers: int = 1,
                start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Endless TRAIN batches of ``worker`` from global step ``start_step`` on."""
        step = start_step
        while True:
            yield self.batch(step, worker, num_workers, batch_size)
            step += 1

    def eval_set(self, n: int):
        """The held-out set: samples ``[0, n)`` of the EVAL stream."""
        return self.samples(0, n, EVAL)

    def embedding_init(self, f: int, rows, dim: int) -> np.ndarray:
        """The spec's optional deterministic init of table ``f``, float32 ``(len(rows), dim)``.

        ``rows`` is a row count (rows ``0..rows-1``) or an array of row indices,
        so a shard of a table can be initialised alone.  Values are uniform in
        ``±sqrt(1/V_f)``.
        """
        _check_int("dim", dim, 1)
        if not 0 <= f < NUM_SPARSE:
            raise ValueError(f"feature f must be in [0, {NUM_SPARSE}), got {f}")
        rows = np.arange(rows) if isinstance(rows, (int, np.integer)) else np.asarray(rows)
        cells = rows.astype(np.uint64)[:, None] * np.uint64(dim) + np.arange(dim, dtype=np.uint64)
        h = mix64(cells ^ np.uint64(key(self.config.seed, _EMBED_TAG, f)))
        scale = math.sqrt(1.0 / self.config.vocab_sizes[f])
        return ((2.0 * unit_float(h) - 1.0) * scale).astype(np.float32)

    def fingerprint(self, n: int = 4096, stream: int = TRAIN) -> str:
        """sha256 hex digest of the bytes of dense, ids, labels of samples ``[0, n)``."""
        digest = hashlib.sha256()
        for array in self.samples(0, n, stream):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def preprocess_dense(dense: np.ndarray) -> np.ndarray:
    """The model input for the synthetic dense features: ``float32(log1p(dense))``."""
    return np.log1p(dense).astype(np.float32)


def reference_check() -> list[str]:
    """Compare this installation with the spec's published values (seed 0 defaults).

    Returns a list of mismatch descriptions, empty when the stream is the
    reference stream (numpy's generators are stable in practice, not by policy).
    """
    gen = SyntheticCriteo(SyntheticConfig())
    problems = []
    if tuple(gen.teacher.tolist()) != TEACHER_SEED0:
        problems.append(f"teacher features {gen.teacher.tolist()} != {list(TEACHER_SEED0)}")
    for name, stream, expected in (("train", TRAIN, TRAIN_FINGERPRINT), ("eval", EVAL, EVAL_FINGERPRINT)):
        actual = gen.fingerprint(4096, stream)
        if actual != expected:
            problems.append(f"{name} fingerprint {actual} != {expected}")
    return problems

