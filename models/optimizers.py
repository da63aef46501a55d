"""The train command's two optimizers, built from flags and described in full
for the metrics file.

The tables' fused optimizer is one of jax_hypereca's (``rowwise_adagrad`` is
FBGEMM's ``EXACT_ROWWISE_ADAGRAD``, accumulator from 0); the MLPs' is an
optax one, called with its own keyword arguments. A TorchRec DLRM config
ports as (see README, "Coming from TorchRec")::

    --sparse-optimizer rowwise_adagrad --sparse-lr 0.05
    --dense-optimizer adagrad --dense-lr 0.001
    --dense-optimizer-args '{"initial_accumulator_value": 0.0, "eps": 1e-8}'

Bad values (JSON that is not an object, an argument the optimizer does not
take, an accumulator for an optimizer without one, a negative or non-finite
number) raise ValueError naming the flag, before anything is trained.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from typing import Any

import optax

import jax_hypereca as h

SPARSE = {"rowwise_adagrad": h.RowwiseAdagrad, "adagrad": h.Adagrad, "sgd": h.SGD,
          "adam": h.Adam, "ftrl": h.FTRL}
DENSE = ("adam", "adagrad", "sgd", "adamw")


def parse_args_json(text: str | None, flag: str) -> dict[str, Any]:
    """The JSON object given to `flag` ({} for None)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: not valid JSON ({e.msg} at character {e.pos}): {text!r}; "
                         f"give an object such as '{{\"eps\": 1e-8}}'") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object of keyword arguments, got {text!r}")
    for k, v in value.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            raise ValueError(f"{flag}: {k} = {v} is not a finite number")
    return value


def sparse_optimizer(name: str, lr: float, *, initial_accumulator: float | None = None,
                     args: str | None = None) -> h.Optimizer:
    """The tables' fused optimizer `name` with learning rate `lr`, its
    initial accumulator (where it has one) and the other fields in `args`."""
    cls = SPARSE[name]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kw = parse_args_json(args, "--sparse-optimizer-args")
    unknown = set(kw) - fields
    if unknown:
        raise ValueError(f"--sparse-optimizer-args: {name} takes no {sorted(unknown)}; its "
                         f"fields: {sorted(fields)}")
    if initial_accumulator is not None:
        if "initial_accumulator_value" not in fields:
            raise ValueError(f"--sparse-initial-accumulator: the {name} optimizer has no "
                             f"accumulator (rowwise_adagrad, adagrad and ftrl have one)")
        if not (math.isfinite(initial_accumulator) and initial_accumulator >= 0):
            raise ValueError(f"--sparse-initial-accumulator must be a finite number >= 0, got "
                             f"{initial_accumulator}")
        kw["initial_accumulator_value"] = initial_accumulator
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--sparse-lr must be a finite number > 0, got {lr}")
    return cls(learning_rate=lr, **kw)


def dense_optimizer(name: str, lr: float, *, args: str | None = None
                    ) -> tuple[optax.GradientTransformation, dict[str, Any]]:
    """``optax.<name>(lr, **args)`` and the keyword arguments it was called with."""
    fn = getattr(optax, name)
    kw = parse_args_json(args, "--dense-optimizer-args")
    params = inspect.signature(fn).parameters
    unknown = set(kw) - set(params) - {"learning_rate"}
    if unknown or "learning_rate" in kw:
        allowed = sorted(set(params) - {"learning_rate"})
        bad = sorted(unknown) or ["learning_rate (use --dense-lr)"]
        raise ValueError(f"--dense-optimizer-args: optax.{name} takes no {bad}; its keyword "
                         f"arguments: {allowed}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--dense-lr must be a finite number > 0, got {lr}")
    return fn(lr, **kw), kw


def describe(sparse: h.Optimizer, dense_name: str, dense_lr: float,
             dense_kw: dict[str, Any]) -> dict[str, Any]:
    """Every setting of both optimizers, defaults included (the metrics
    file's config line)."""
    fn = getattr(optax, dense_name)
    defaults = {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty and k != "learning_rate"
                and isinstance(p.default, (int, float, bool, str, type(None)))}
    sparse_fields = {f.name: getattr(sparse, f.name) for f in dataclasses.fields(sparse)}
    return {"sparse": {"name": type(sparse).__name__, **sparse_fields},
            "dense": {"name": f"optax.{dense_name}", "learning_rate": dense_lr,
                      **defaults, **dense_kw}}
