"""Benchmark of DLRM's dot interaction forms (experiments/interaction_forms.py) on one device.

    python -m experiments.bench_interaction [--batch 4096] [--vectors 27] [--dim 64]
                                            [--repeats 7] [--out FILE]

Input: ``vectors`` arrays of [batch, dim] float32 (the bottom MLP output and
the embeddings, as the model holds them); every form includes its own
stacking. Measured per form: the forward, and forward + backward (the value
and gradient of sum(out * cotangent), what a train step runs). Forms are timed
in interleaved rounds (one call of each per round) so load from other
processes hits them alike; times are medians, and ratios are against the
einsum form measured in the same run. Every form is checked against einsum
(max abs error of the output and of the gradient). Prints JSON lines; the
last is the summary naming the fastest correct form forward + backward.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp

from experiments.harness import JsonLines, environment
from experiments.interaction_forms import FORMS

BASELINE = "einsum"


def make_fns(form: str):
    """(forward(vectors, cotangent), forward + backward(vectors, cotangent)) of
    one form, jitted (the cotangent is an argument, not a folded constant)."""
    f = FORMS[form]
    fwd = jax.jit(lambda vs, _: f(vs))
    train = jax.jit(jax.value_and_grad(lambda vs, ct: (f(vs) * ct).sum()))
    return fwd, train


def interleaved_medians(fns: dict[str, Callable], args: tuple, repeats: int) -> dict[str, float]:
    """Median seconds per function, timing one call of each per round."""
    for fn in fns.values():
        jax.block_until_ready(fn(*args))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--vectors", type=int, default=27, help="bottom output + embeddings")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", help="also write the JSON lines to this file")
    args = p.parse_args(argv)
    out = JsonLines(args.out)
    out.emit(environment())
    keys = jax.random.split(jax.random.PRNGKey(0), args.vectors + 1)
    vectors = [jax.random.normal(k, (args.batch, args.dim)) for k in keys[:-1]]
    pairs = args.vectors * (args.vectors - 1) // 2
    cotangent = jax.random.normal(keys[-1], (args.batch, pairs))

    inputs = (vectors, cotangent)
    fns = {form: make_fns(form) for form in FORMS}
    ref_out = fns[BASELINE][0](*inputs)
    _, ref_grad = fns[BASELINE][1](*inputs)
    errors = {}
    for form, (fwd, train) in fns.items():
        _, grad = train(*inputs)
        errors[form] = (float(jnp.abs(fwd(*inputs) - ref_out).max()),
                        max(float(jnp.abs(a - b).max()) for a, b in zip(grad, ref_grad)))
    fwd_s = interleaved_medians({f: fs[0] for f, fs in fns.items()}, inputs, args.repeats)
    train_s = interleaved_medians({f: fs[1] for f, fs in fns.items()}, inputs, args.repeats)
    config = dict(batch=args.batch, vectors=args.vectors, dim=args.dim, repeats=args.repeats)
    scale = float(jnp.abs(ref_out).max())
    correct = {f: errors[f][0] <= 1e-5 * scale and errors[f][1] <= 1e-5 * scale * args.vectors
               for f in FORMS}
    for form in FORMS:
        out.emit(dict(bench="interaction", form=form, **config,
                      forward_s=fwd_s[form], forward_backward_s=train_s[form],
                      forward_vs_einsum=fwd_s[form] / fwd_s[BASELINE],
                      forward_backward_vs_einsum=train_s[form] / train_s[BASELINE],
                      max_abs_err=errors[form][0], grad_max_abs_err=errors[form][1],
                      correct=correct[form]))
    ok = [f for f in FORMS if correct[f]]
    best = min(ok, key=train_s.get)
    out.emit(dict(bench="interaction_summary", **config, baseline=BASELINE,
                  fastest_forward_backward=best, fastest_forward=min(ok, key=fwd_s.get),
                  einsum_forward_s=fwd_s[BASELINE], einsum_forward_backward_s=train_s[BASELINE],
                  fastest_forward_backward_vs_einsum=train_s[best] / train_s[BASELINE],
                  fastest_forward_vs_einsum=fwd_s[best] / fwd_s[BASELINE]))
    out.close()


if __name__ == "__main__":
    main()
