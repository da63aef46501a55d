"""The full DLRM's dense part alone: the ceiling of a sparse train step.

`bench_pipeline`'s dense-only model (no embeddings at all) is a smaller
network: its top MLP sees the bottom output only, not the 351 pairwise dot
products of 27 vectors, and it has no interaction. The trainer here runs the
*same* network as the sparse model (bottom MLP, dot interaction, top MLP)
with the embeddings a fixed input of the step, and returns their gradient
(what the embedding side's backward consumes), so XLA computes everything
the sparse step's dense stage computes and nothing of the embedding side.
Pipelined samples/s divided by this trainer's is the fraction of the dense
ceiling the embedding side leaves.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jax_hypereca as h
from models.config import ModelConfig
from models.dlrm import MLP, interact_and_top


class FixedEmbeddingDLRM(nn.Module):
    """DLRM (dot interaction) over given embeddings [B, F, D]."""

    config: ModelConfig

    @nn.compact
    def __call__(self, dense: jax.Array, embedded: jax.Array) -> jax.Array:
        x = MLP(self.config.bottom_mlp, name="bottom")(dense)
        return interact_and_top(self.config, x,
                                [embedded[:, i] for i in range(embedded.shape[1])])


class FixedEmbeddingTrainer:
    """submit / flush / pop_completed like models.train's trainers; each
    batch's embeddings are one fixed random array (their values do not
    change the work)."""

    def __init__(self, config: ModelConfig, num_features: int, batch: int, mesh,
                 dense_tx: optax.GradientTransformation, seed: int = 0):
        self.model, self.dense_tx = FixedEmbeddingDLRM(config), dense_tx
        self.sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
        rng = np.random.default_rng(seed)
        emb = rng.normal(0, 0.05, (batch, num_features, config.embedding_dim))
        self.embedded = jax.device_put(emb.astype(np.float32), self.sharding)
        self._done: list = []

        def step(state, batch, embedded):
            def loss_fn(params, e):
                logits = self.model.apply({"params": params}, batch["dense"], e)
                return optax.sigmoid_binary_cross_entropy(logits, batch["labels"]).mean()

            loss, (g, g_emb) = jax.value_and_grad(loss_fn, argnums=(0, 1))(state.params,
                                                                           embedded)
            updates, opt_state = dense_tx.update(g, state.opt_state, state.params)
            return h.TrainState(optax.apply_updates(state.params, updates), opt_state, {},
                                state.step + 1), loss, g_emb

        self._step = jax.jit(step, donate_argnums=(0,))

    def init_state(self, dense: np.ndarray) -> h.TrainState:
        params = self.model.init(jax.random.PRNGKey(0), jnp.asarray(dense),
                                 self.embedded)["params"]
        return h.TrainState(params, self.dense_tx.init(params), {}, jnp.zeros((), jnp.int64))

    def prepare(self, batch) -> dict:
        return {k: jax.device_put(batch[k], self.sharding) for k in ("dense", "labels")}

    def submit(self, state, batch) -> h.TrainState:
        state, loss, _ = self._step(state, batch, self.embedded)  # the gradient is computed
        self._done.append(loss)
        return state

    def flush(self, state) -> h.TrainState:
        return state

    def pop_completed(self) -> list[dict]:
        done, self._done = self._done, []
        return [{"loss": float(loss)} for loss in done]
