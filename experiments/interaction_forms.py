"""The forms of DLRM's dot interaction that experiments/bench_interaction.py times.

Every form maps ``n`` vectors of shape ``[B, d]`` to their pairwise dot
products ``[B, n (n - 1) / 2]`` in the order of
:func:`models.interaction.dot_interaction` (the strictly lower triangle,
row-major).  They differ only in how XLA is asked to compute it (and, for
two, its gradient).  The models use the fastest, ``FASTEST``, which is
``models.interaction.dot_interaction`` itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from models.interaction import dot_interaction, flat_triangle, symmetric_from_triangle, triangle

Interaction = Callable[[Sequence[jax.Array]], jax.Array]


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
    return jnp.take(z, jnp.asarray(flat_triangle(n)), axis=1)


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


def d_major_take(vectors: Sequence[jax.Array]) -> jax.Array:
    """Stack to [B, d, n] (d-major), products as ``bdn,bdm->bnm``, one static
    take of the triangle; autodiff backward."""
    x = jnp.stack(vectors, axis=2)
    n = x.shape[2]
    z = jnp.einsum("bdn,bdm->bnm", x, x).reshape(x.shape[0], n * n)
    return jnp.take(z, jnp.asarray(flat_triangle(n)), axis=1)


@jax.custom_vjp
def _n_major_gram_triangle(x: jax.Array) -> jax.Array:
    """matmul_take's forward on x = [B, n, d]."""
    n = x.shape[1]
    z = jnp.einsum("bnd,bmd->bnm", x, x).reshape(x.shape[0], n * n)
    return jnp.take(z, jnp.asarray(flat_triangle(n)), axis=1)


def _n_major_fwd(x):
    return _n_major_gram_triangle(x), x


def _n_major_bwd(x, g):
    sym = symmetric_from_triangle(g, x.shape[1])
    return (jnp.einsum("bnm,bmd->bnd", sym, x),)


_n_major_gram_triangle.defvjp(_n_major_fwd, _n_major_bwd)


def symmetric_vjp(vectors: Sequence[jax.Array]) -> jax.Array:
    """matmul_take's forward with a hand-written backward: one gather builds
    the symmetric gradient matrix, one batched matmul applies it."""
    return _n_major_gram_triangle(jnp.stack(vectors, axis=1))


FORMS: dict[str, Interaction] = {
    "einsum": einsum_take,
    "matmul_take": matmul_take,
    "pairs": pairs,
    "row_blocks": row_blocks,
    "batch_minor_pairs": batch_minor_pairs,
    "broadcast": broadcast_take,
    "d_major_take": d_major_take,
    "symmetric_vjp": symmetric_vjp,
    "d_major_symmetric_vjp": dot_interaction,
}

# The fastest form forward + backward on XLA:CPU. bench_interaction.py, batch
# 4096, 27 vectors of dim 64, 2 cores, jax 0.10.2, medians as ratios to einsum
# in the same run (einsum: 37 ms forward, 79 ms forward + backward):
#   d_major_symmetric_vjp 0.61 / 0.66, symmetric_vjp 0.99 / 0.74,
#   d_major_take 0.70 / 2.30, matmul_take 0.98 / 0.97, broadcast 2.3 / 6.1,
#   row_blocks 3.4 / 4.0, pairs 4.5 / 5.4, batch_minor_pairs 4.6 / 5.5.
FASTEST = "d_major_symmetric_vjp"
"""The form models.interaction.dot_interaction implements."""
