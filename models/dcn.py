"""DCN-v2's cross network (Wang et al., "DCN V2", WWW '21), in Flax linen.

Each layer computes ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``; with a low
rank ``r`` the matrix is factored as ``W_l = U_l V_l`` (``V_l: d -> r``,
``U_l: r -> d``), as TorchRec's ``LowRankCrossNet`` and MLPerf DLRMv2 do.
"""

from __future__ import annotations

import flax.linen as nn
import jax


class CrossNetwork(nn.Module):
    """A stack of DCN-v2 cross layers over ``x0`` [B, d] -> [B, d].

    Attributes:
      num_layers: cross layers.
      low_rank: rank of each layer's matrix; 0 means full rank (one d x d
        matrix per layer).
    """

    num_layers: int = 3
    low_rank: int = 0

    @nn.compact
    def __call__(self, x0: jax.Array) -> jax.Array:
        d = x0.shape[-1]
        x = x0
        for i in range(self.num_layers):
            if self.low_rank:
                h = nn.Dense(self.low_rank, use_bias=False, name=f"down_{i}")(x)
                h = nn.Dense(d, name=f"up_{i}")(h)
            else:
                h = nn.Dense(d, name=f"cross_{i}")(x)
            x = x0 * h + x
        return x
