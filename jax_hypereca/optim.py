"""Fused sparse optimizers of the tables.

Each optimizer is a keyword-only dataclass whose state lives beside every row
of the table (``opt_state[C, state_width(dim)]``) and whose hyperparameters
reach the native ``apply_gradients`` as a float32 operand, so learning rates
and other values may follow a schedule (any ``step -> value`` callable, e.g. an
optax schedule) without recompiling. The math is in
ffi/include/hypereca/optim.h:

=================  ==========================================================
``SGD``            w -= lr * (g + wd*w)
``Adagrad``        a += g²;  w -= lr * (g / sqrt(a + eps) + wd*w)
                   (optax's: accumulator from 0.1, eps inside the root)
``RowwiseAdagrad`` a += mean(g²);  w -= lr * (g / (sqrt(a) + eps) + wd*w)
                   (FBGEMM/TorchRec's, one accumulator per row, starting at 0)
``Adam``           per-row step count t; bias-corrected m, v (as optax.adam)
``FTRL``           FTRL-proximal, lr_power -1/2 (as Keras), state z, n
=================  ==========================================================

Gradients of duplicate ids are summed exactly before the update; rows whose
summed gradient holds a NaN or Inf are skipped and counted, never applied.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Union

import jax.numpy as jnp
import numpy as np

from jax_hypereca._native import CONSTANTS

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
ScalarOrSchedule = Union[float, Schedule]

_HP = CONSTANTS["HPARAMS"]
_KINDS: dict[str, int] = CONSTANTS["OPTIMIZERS"]  # OptimizerKind (enums.h)


# (lowest, above-all) of hyperparameters other than the learning rate; the
# rest: >= 0, no upper bound.
_RANGES = {"b1": (0.0, 1.0), "b2": (0.0, 1.0)}


def _value(v: ScalarOrSchedule, step) -> jnp.ndarray:
    return jnp.asarray(v(step) if callable(v) else v, jnp.float32)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optimizer:
    """Base of the fused sparse optimizers (not used directly)."""

    kind: ClassVar[int]
    learning_rate: ScalarOrSchedule = 0.01
    """Step size, or a ``step -> lr`` schedule evaluated on device."""

    def __post_init__(self):
        """Refuses hyperparameters that would train silently wrong: every
        number finite, the learning rate > 0, the others >= 0 and Adam's
        decays below 1 (schedules are not checked: they run on device)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if callable(v):
                continue
            low, high = _RANGES.get(f.name, (0.0, None))
            # a number (not a bool or a string), finite and in range as the
            # float32 the native update receives (1e300 would be inf, 1e-300 0)
            number = isinstance(v, (int, float, np.integer, np.floating)) and \
                not isinstance(v, (bool, np.bool_))
            with np.errstate(over="ignore"):
                x = float(np.float32(v)) if number else float("nan")
            ok = np.isfinite(x) and (x > 0 if f.name == "learning_rate" else x >= low) and (
                high is None or x < high)
            if not ok:
                rule = ("> 0" if f.name == "learning_rate" else
                        f">= {low}" + ("" if high is None else f" and < {high}"))
                raise ValueError(f"{type(self).__name__}: {f.name}={v!r}; set {f.name} to a "
                                 f"finite number {rule} as a float32 (or a step -> value "
                                 f"schedule)")

    def state_width(self, dim: int) -> int:
        """Float32 values of optimizer state stored per row."""
        raise NotImplementedError

    def initial_state(self, dim: int) -> np.ndarray:
        """State of a newly inserted row, (state_width,) float32."""
        return np.zeros((self.state_width(dim),), np.float32)

    def _hparams(self) -> dict[str, ScalarOrSchedule]:
        return {}

    def hparams(self, step) -> jnp.ndarray:
        """The (8,) float32 hyperparameter operand at `step` (traceable)."""
        values = {"lr": self.learning_rate, **self._hparams()}
        out = jnp.zeros((CONSTANTS["NUM_HPARAMS"],), jnp.float32)
        for name, v in values.items():
            out = out.at[_HP[name]].set(_value(v, step))
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class SGD(Optimizer):
    """Plain SGD, optionally with decoupled weight decay on touched rows."""

    kind: ClassVar[int] = _KINDS["sgd"]
    weight_decay: ScalarOrSchedule = 0.0
    """Decoupled weight decay applied to the rows a step touches."""

    def state_width(self, dim: int) -> int:
        return 0

    def _hparams(self):
        return {"weight_decay": self.weight_decay}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Adagrad(Optimizer):
    """Element-wise Adagrad with optax's conventions (``optax.adagrad``)."""

    kind: ClassVar[int] = _KINDS["adagrad"]
    initial_accumulator_value: float = 0.1
    """Starting value of every accumulator (optax: 0.1; TorchRec: 0)."""
    eps: ScalarOrSchedule = 1e-7
    """Added inside the square root."""
    weight_decay: ScalarOrSchedule = 0.0
    """Decoupled weight decay applied to the rows a step touches."""

    def state_width(self, dim: int) -> int:
        return dim

    def initial_state(self, dim: int) -> np.ndarray:
        return np.full((dim,), self.initial_accumulator_value, np.float32)

    def _hparams(self):
        return {"eps": self.eps, "weight_decay": self.weight_decay}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowwiseAdagrad(Optimizer):
    """FBGEMM's ``EXACT_ROWWISE_ADAGRAD`` (TorchRec's fused row-wise Adagrad):
    one accumulator per row, fed with the mean of the squared gradient::

        a += mean(g**2);  w -= lr * g / (sqrt(a) + eps)

    with FBGEMM's defaults: the accumulator starts at 0 and ``eps`` (1e-8) is
    added outside the square root, so a TorchRec config ported with the same
    learning rate takes the same steps (the first one is about ``lr`` per
    element, whatever the gradient's scale). ``weight_decay`` is FBGEMM's
    ``WeightDecayMode.DECOUPLE`` (``w -= lr * wd * w`` on the touched rows);
    FBGEMM's L2 mode is not offered.
    """

    kind: ClassVar[int] = _KINDS["rowwise_adagrad"]
    initial_accumulator_value: float = 0.0
    """Starting value of the row accumulator (FBGEMM and TorchRec: 0)."""
    eps: ScalarOrSchedule = 1e-8
    """Added outside the square root (FBGEMM's placement and default)."""
    weight_decay: ScalarOrSchedule = 0.0
    """Decoupled weight decay applied to the rows a step touches."""

    def state_width(self, dim: int) -> int:
        return 1

    def initial_state(self, dim: int) -> np.ndarray:
        return np.full((1,), self.initial_accumulator_value, np.float32)

    def _hparams(self):
        return {"eps": self.eps, "weight_decay": self.weight_decay}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Adam(Optimizer):
    """Adam with per-row bias correction: each row counts its own updates, so a
    row touched every step matches ``optax.adam`` exactly (AdamW with
    ``weight_decay``)."""

    kind: ClassVar[int] = _KINDS["adam"]
    b1: ScalarOrSchedule = 0.9
    """First-moment decay."""
    b2: ScalarOrSchedule = 0.999
    """Second-moment decay."""
    eps: ScalarOrSchedule = 1e-8
    """Added outside the square root."""
    weight_decay: ScalarOrSchedule = 0.0
    """Decoupled weight decay applied to the rows a step touches."""

    def state_width(self, dim: int) -> int:
        return 2 * dim + 1

    def _hparams(self):
        return {"b1": self.b1, "b2": self.b2, "eps": self.eps,
                "weight_decay": self.weight_decay}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FTRL(Optimizer):
    """FTRL-proximal with learning-rate power -1/2 (Keras ``Ftrl``)."""

    kind: ClassVar[int] = _KINDS["ftrl"]
    l1: ScalarOrSchedule = 0.0
    """L1 regularization strength."""
    l2: ScalarOrSchedule = 0.0
    """L2 regularization strength."""
    beta: ScalarOrSchedule = 0.0
    """Keras' beta, added to sqrt(n) in the denominator."""
    initial_accumulator_value: float = 0.1
    """Starting value of the n accumulator."""

    def state_width(self, dim: int) -> int:
        return 2 * dim

    def initial_state(self, dim: int) -> np.ndarray:
        return np.concatenate([np.zeros((dim,), np.float32),
                               np.full((dim,), self.initial_accumulator_value, np.float32)])

    def _hparams(self):
        return {"l1": self.l1, "l2": self.l2, "beta": self.beta}


__all__ = ["Optimizer", "SGD", "Adagrad", "RowwiseAdagrad", "Adam", "FTRL"]
