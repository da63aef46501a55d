"""DLRM's pairwise dot interaction, in the forms XLA:CPU might run fastest.

Every form maps ``n`` vectors of shape ``[B, d]`` (the bottom MLP's output
and the embeddings, in that order) to their pairwise dot products
``[B, n (n - 1) / 2]``: the strictly lower triangle of the ``n x n`` Gram
matrix, row-major over ``(i, j)`` with ``j < i`` (the reference DLRM's and
TorchRec's order). The forms differ only in how XLA is asked to compute it
(and, for two, its gradient); ``experiments/bench_interaction.py`` times them
forward and forward + backward, and ``FASTEST`` names the form the models use.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Interaction = Callable[[Sequence[jax.Array]], jax.Array]


def triangle(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the strictly lower triangle of an n x n matrix, row-major."""
    return np.tril_indices(n, k=-1)


def num_pairs(n: int) -> int:
    """Outputs of the interaction of n vectors."""
    return n * (n - 1) // 2


def _flat_triangle(n: int) -> np.ndarray:
    rows, cols = triangle(n)
    return rows * n + cols


def einsum_take(vectors: Sequence[jax.Array]) -> jax.Array:
    """Stack to [B, n, d], all n x n products as one einsum, then the
    triangle by fancy indexing (the textbook JAX form)."""
    x = jnp.stack(vectors, axis=1)
    rows, cols = triangle(x.shape[1])
    return jnp.einsum("bnd,bmd->bnm", x, x)[:, rows, cols]


def matmul_take(vectors: Sequence[jax.Array]) -> jax.Array:
    """An explicit batched matmul x @ x^T, then the triangle gathered from
    the flattened products with one static ``take``."""
    x = jnp.stack(vectors, axis=1)
    n = x.shape[1]
    z = jnp.matmul(x, jnp.swapaxes(x, 1, 2)).reshape(x.shape[0], n * n)
    return jnp.take(z, jnp.asarray(_flat_triangle(n)), axis=1)


def pairs(vectors: Sequence[jax.Array]) -> jax.Array:
    """Only the needed pairs: gather both sides of every pair, multiply and
    reduce over d (no n x n intermediate)."""
    x = jnp.stack(vectors, axis=1)
    rows, cols = triangle(x.shape[1])
    return (x[:, rows] * x[:, cols]).sum(-1)


def row_blocks(vectors: Sequence[jax.Array]) -> jax.Array:
    """Only the needed triangle as n - 1 batched matrix-vector products: row i
    is vector i against vectors 0 .. i-1."""
    x = jnp.stack(vectors, axis=1)
    return jnp.concatenate([jnp.einsum("bd,bjd->bj", vectors[i], x[:, :i])
                            for i in range(1, len(vectors))], axis=1)


def batch_minor_pairs(vectors: Sequence[jax.Array]) -> jax.Array:
    """The pairs form with the batch as the minor (vectorized) axis: stack to
    [n, d, B], reduce the pair products over d, transpose back."""
    xt = jnp.stack([v.T for v in vectors])  # [n, d, B]
    rows, cols = triangle(xt.shape[0])
    return (xt[rows] * xt[cols]).sum(1).T


def broadcast_take(vectors: Sequence[jax.Array]) -> jax.Array:
    """The n x n products as a broadcast multiply fused into a reduction over
    d, then the triangle by fancy indexing."""
    x = jnp.stack(vectors, axis=1)
    rows, cols = triangle(x.shape[1])
    return (x[:, :, None, :] * x[:, None, :, :]).sum(-1)[:, rows, cols]


def _gram(x: jax.Array, d_major: bool) -> jax.Array:
    """[B, n, n] products of x ([B, d, n] if d_major else [B, n, d])."""
    return jnp.einsum("bdn,bdm->bnm" if d_major else "bnd,bmd->bnm", x, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gram_triangle(x: jax.Array, d_major: bool) -> jax.Array:
    n = x.shape[2 if d_major else 1]
    z = _gram(x, d_major).reshape(x.shape[0], n * n)
    return jnp.take(z, jnp.asarray(_flat_triangle(n)), axis=1)


def _gram_triangle_fwd(x, d_major):
    return _gram_triangle(x, d_major), x


def _gram_triangle_bwd(d_major, x, g):
    """d/dx of sum(g * tri(x x^T)) = G x with G the symmetric n x n matrix
    holding g off the diagonal: built by one gather (g padded with a zero for
    the diagonal), where autodiff of the take would scatter into n x n and
    run two batched matmuls."""
    n = x.shape[2 if d_major else 1]
    rows, cols = triangle(n)
    index = np.full((n, n), rows.size, np.int32)  # the diagonal reads the zero pad
    index[rows, cols] = index[cols, rows] = np.arange(rows.size)
    padded = jnp.concatenate([g, jnp.zeros((g.shape[0], 1), g.dtype)], axis=1)
    sym = jnp.take(padded, jnp.asarray(index.reshape(-1)), axis=1).reshape(-1, n, n)
    if d_major:
        return (jnp.einsum("bdm,bnm->bdn", x, sym),)
    return (jnp.einsum("bnm,bmd->bnd", sym, x),)


_gram_triangle.defvjp(_gram_triangle_fwd, _gram_triangle_bwd)


def d_major_take(vectors: Sequence[jax.Array]) -> jax.Array:
    """Stack to [B, d, n] (d-major), products as ``bdn,bdm->bnm``, one static
    take of the triangle; autodiff backward."""
    x = jnp.stack(vectors, axis=2)
    n = x.shape[2]
    z = _gram(x, True).reshape(x.shape[0], n * n)
    return jnp.take(z, jnp.asarray(_flat_triangle(n)), axis=1)


def symmetric_vjp(vectors: Sequence[jax.Array]) -> jax.Array:
    """matmul_take's forward with a hand-written backward: one gather builds
    the symmetric gradient matrix, one batched matmul applies it."""
    return _gram_triangle(jnp.stack(vectors, axis=1), False)


def d_major_symmetric_vjp(vectors: Sequence[jax.Array]) -> jax.Array:
    """d_major_take's forward with symmetric_vjp's backward."""
    return _gram_triangle(jnp.stack(vectors, axis=2), True)


FORMS: dict[str, Interaction] = {
    "einsum": einsum_take,
    "matmul_take": matmul_take,
    "pairs": pairs,
    "row_blocks": row_blocks,
    "batch_minor_pairs": batch_minor_pairs,
    "broadcast": broadcast_take,
    "d_major_take": d_major_take,
    "symmetric_vjp": symmetric_vjp,
    "d_major_symmetric_vjp": d_major_symmetric_vjp,
}

# The fastest form forward + backward on XLA:CPU. bench_interaction.py, batch
# 4096, 27 vectors of dim 64, 2 cores, jax 0.10.2, medians as ratios to einsum
# in the same run (einsum: 37 ms forward, 79 ms forward + backward):
#   d_major_symmetric_vjp 0.61 / 0.66, symmetric_vjp 0.99 / 0.74,
#   d_major_take 0.70 / 2.30, matmul_take 0.98 / 0.97, broadcast 2.3 / 6.1,
#   row_blocks 3.4 / 4.0, pairs 4.5 / 5.4, batch_minor_pairs 4.6 / 5.5.
FASTEST = "d_major_symmetric_vjp"


def dot_interaction(vectors: Sequence[jax.Array], form: str = FASTEST) -> jax.Array:
    """The pairwise dot products of ``vectors`` (each [B, d]): [B, n(n-1)/2]."""
    if form not in FORMS:
        raise ValueError(f"unknown interaction form {form!r}; forms: {sorted(FORMS)}")
    if len(vectors) < 2:
        raise ValueError(f"the dot interaction needs at least 2 vectors, got {len(vectors)}")
    return FORMS[form](vectors)
