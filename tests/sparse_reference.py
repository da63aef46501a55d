"""An independent single-device reference for training through an
EmbeddingCollection: dense numpy tables indexed by position in a host
vocabulary (so ids may be any int64), the looked-up rows' gradients from
plain jnp autodiff of the same loss, and each fused optimizer's published
formula applied in numpy float32 to exactly the rows a step looks up (a dense
optax Adam would also move the rows a step does not touch). Stored values are
rounded to the table's dtype after every update, as a bfloat16 table stores
them. Evicted ids can be reset to their initial row and optimizer state.

Shares nothing with the library but its public specs and ``init_rows`` (the
documented pure function of (seed, id, column))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax

import jax_hypereca as h

F32 = np.float32


def sparse_update(opt: h.Optimizer, w: np.ndarray, s: np.ndarray, g: np.ndarray, step: int):
    """One update of rows w [n, dim] (float32) with state s [n, K] and summed
    gradients g [n, dim], by the formulas optim.py documents. Returns (w, s)."""
    lr = F32(opt.learning_rate(step) if callable(opt.learning_rate) else opt.learning_rate)
    dim = w.shape[1]
    s = s.copy()
    if isinstance(opt, h.SGD):
        return w - lr * (g + F32(opt.weight_decay) * w), s
    if isinstance(opt, h.Adagrad):
        a = s + g * g
        return w - lr * (g / np.sqrt(a + F32(opt.eps)) + F32(opt.weight_decay) * w), a
    if isinstance(opt, h.RowwiseAdagrad):
        acc = s[:, 0] + (g * g).sum(axis=1, dtype=F32) / F32(dim)
        mult = F32(1) / (np.sqrt(acc) + F32(opt.eps))
        s[:, 0] = acc
        return w - lr * (g * mult[:, None] + F32(opt.weight_decay) * w), s
    if isinstance(opt, h.Adam):
        b1, b2 = F32(opt.b1), F32(opt.b2)
        t = s[:, 2 * dim] + F32(1)
        m = b1 * s[:, :dim] + (F32(1) - b1) * g
        v = b2 * s[:, dim:2 * dim] + (F32(1) - b2) * g * g
        bc1, bc2 = F32(1) - b1 ** t, F32(1) - b2 ** t
        u = (m / bc1[:, None]) / (np.sqrt(v / bc2[:, None]) + F32(opt.eps))
        s[:, :dim], s[:, dim:2 * dim], s[:, 2 * dim] = m, v, t
        return w - lr * (u + F32(opt.weight_decay) * w), s
    if isinstance(opt, h.FTRL):
        l1, l2, beta = F32(opt.l1), F32(opt.l2), F32(opt.beta)
        n = s[:, dim:]
        n_new = n + g * g
        z = s[:, :dim] + g - (np.sqrt(n_new) - np.sqrt(n)) / lr * w
        s[:, :dim], s[:, dim:] = z, n_new
        w_new = -(z - np.sign(z) * l1) / ((beta + np.sqrt(n_new)) / lr + F32(2) * l2)
        return np.where(np.abs(z) > l1, w_new, F32(0)).astype(F32), s
    raise TypeError(f"no reference for {type(opt).__name__}")


def padded(ids, max_ids: int):
    """(ids [B, L] int64 padded with -1, weights [B, L] or None) of a padded
    array or a Jagged input (written out here, not the library's converter)."""
    if isinstance(ids, h.Jagged):
        out = np.full((len(ids.lengths), max_ids), h.PADDING_ID, np.int64)
        w = None if ids.weights is None else np.zeros(out.shape, F32)
        pos = 0
        for i, n in enumerate(ids.lengths):
            out[i, :n] = ids.values[pos:pos + n]
            if w is not None:
                w[i, :n] = ids.weights[pos:pos + n]
            pos += n
        return out, w
    arr = np.asarray(ids, np.int64)
    return arr.reshape(arr.shape[0], max_ids), None


def _pool(feature: h.FeatureSpec, rows, mask, weights):
    """rows [B, L, D] of one feature -> its output, with padding masked."""
    w = mask if weights is None else mask * weights
    r = rows * w[..., None]
    if feature.pooling == "none":
        return r
    s = r.sum(axis=1)
    if feature.pooling == "sum":
        return s
    den = w.sum(axis=1, keepdims=True)
    return jnp.where(den > 0, s / jnp.where(den > 0, den, 1.0), 0.0)


class Reference:
    """The single-device reference of a collection's training.

    Args:
      tables, features: the same specs as the collection's.
      head: ``loss(params, embeddings, batch)``, the same as the train step's.
      params: initial dense params; dense_tx: their optax optimizer.
      batches: every batch the run will see (their ids form the vocabulary).
    """

    def __init__(self, tables, features, head, params, dense_tx, batches):
        self.specs = {t.name: t for t in tables}
        self.features = {f.name: f for f in features}
        self.head, self.dense_tx = head, dense_tx
        self.params, self.opt = params, dense_tx.init(params)
        self.step_count = 0
        seen = {t: [] for t in self.specs}
        for b in batches:
            for name, f in self.features.items():
                ids, _ = padded(b["ids"][name], f.max_ids)
                seen[f.table].append(ids[ids != h.PADDING_ID])
        self.vocab = {t: np.unique(np.concatenate(v)) for t, v in seen.items()}
        self.values, self.state = {}, {}
        for t, spec in self.specs.items():
            self.values[t] = np.zeros((len(self.vocab[t]), spec.dim), F32)
            self.state[t] = np.zeros((len(self.vocab[t]), spec.state_width), F32)
            self.reset(t, self.vocab[t])
        self._grad = jax.jit(jax.value_and_grad(self._loss, argnums=(0, 1)))

    def index(self, table: str, ids: np.ndarray) -> np.ndarray:
        """Positions of `ids` in the table's vocabulary; -1 for padding."""
        pos = np.searchsorted(self.vocab[table], ids)
        return np.where(ids == h.PADDING_ID, -1, pos)

    def reset(self, table: str, ids) -> None:
        """`ids` get their initial row and optimizer state (as after an
        eviction: an id that returns starts afresh)."""
        spec = self.specs[table]
        ids = np.asarray(ids, np.int64)
        pos = self.index(table, ids)
        self.values[table][pos] = h.init_rows(spec.seed, ids, spec.dim, spec.initializer,
                                              dtype=spec.dtype).astype(F32)
        self.state[table][pos] = spec.optimizer.initial_state(spec.dim)

    def _loss(self, params, tables, idx, weights, rest):
        emb = {}
        for name, f in self.features.items():
            i = idx[name]
            rows = jnp.take(tables[f.table], jnp.maximum(i, 0), axis=0)
            emb[name] = _pool(f, rows, (i >= 0).astype(jnp.float32), weights.get(name))
            if f.pooling != "none" and f.max_ids == 1 and emb[name].ndim == 3:
                emb[name] = emb[name][:, 0]
        return self.head(params, emb, rest)

    def step(self, batch) -> float:
        """One training step on a host batch (the collection's format)."""
        self.step_count += 1
        idx, weights, touched = {}, {}, {t: [] for t in self.specs}
        for name, f in self.features.items():
            ids, w = padded(batch["ids"][name], f.max_ids)
            idx[name] = jnp.asarray(self.index(f.table, ids), jnp.int32)
            if f.weighted:
                given = batch.get("weights", {}).get(name)
                weights[name] = jnp.asarray(w if given is None else given, jnp.float32)
            touched[f.table].append(np.asarray(idx[name]).reshape(-1))
        rest = {k: v for k, v in batch.items() if k not in ("ids", "weights")}
        tables = {t: jnp.asarray(v) for t, v in self.values.items()}
        loss, (gp, gt) = self._grad(self.params, tables, idx, weights, rest)
        updates, self.opt = self.dense_tx.update(gp, self.opt, self.params)
        self.params = optax.apply_updates(self.params, updates)
        for t, spec in self.specs.items():
            rows = np.unique(np.concatenate(touched[t]))
            rows = rows[rows >= 0]
            g = np.asarray(gt[t])[rows]
            w, s = sparse_update(spec.optimizer, self.values[t][rows], self.state[t][rows], g,
                                 self.step_count - 1)
            if np.dtype(spec.dtype) != np.float32:
                w = w.astype(ml_dtypes.bfloat16).astype(F32)
            self.values[t][rows], self.state[t][rows] = w, s
        return float(loss)

    def rows(self, table: str, ids) -> tuple[np.ndarray, np.ndarray]:
        """(values, optimizer state) of `ids` now."""
        pos = self.index(table, np.asarray(ids, np.int64))
        return self.values[table][pos], self.state[table][pos]
