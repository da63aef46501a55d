"""Least-squares fit of collective timings (numpy only).

``seconds = fixed + per_byte * bytes``, separately for the all-reduce and
the all-to-all measurements of one mesh.  Below :mod:`.types` (it reads
measurements by their attributes and returns plain fields), so that
``CostProfile.from_measurements`` can stay a one-line constructor.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .constants import KEY_BYTES
from .errors import PlannerError


@dataclass(frozen=True, kw_only=True)
class LinearFit:
    """``seconds = intercept + slope * bytes`` fitted by least squares."""

    intercept: float
    """Fixed seconds per call."""
    slope: float
    """Seconds per byte."""
    r2: float
    """Coefficient of determination on the fitted points."""
    num_points: int
    """Measurements used."""


def fit_line(x: np.ndarray, y: np.ndarray, *, what: str = "timings") -> LinearFit:
    """Least-squares ``y = a + b x`` with a >= 0 and b > 0.

    If the unconstrained intercept is negative the line is refitted through
    the origin.  Raises :class:`PlannerError` if fewer than two distinct x
    or if y does not grow with x.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if np.unique(x).size < 2:
        raise PlannerError(
            f"{what}: need measurements at >= 2 distinct sizes to fit a fixed and a "
            f"per-byte cost, got {np.unique(x).size}; time more row counts"
        )
    A = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    if a < 0:
        a, b = 0.0, float(x @ y / (x @ x))
    if not b > 0:
        raise PlannerError(
            f"{what}: fitted seconds per byte is {b:.3g} (time does not grow with size); "
            "measure larger sizes or more repeats"
        )
    pred = a + b * x
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res <= 1e-30 else 0.0)
    return LinearFit(intercept=float(a), slope=float(b), r2=r2, num_points=int(x.size))


def fit_collectives(measurements: Sequence[Any], *, min_r2: float | None = None) -> tuple[int, dict[str, LinearFit]]:
    """``(num_devices, {kind: LinearFit})`` for 'all_reduce' and 'all_to_all'.

    ``measurements`` are :class:`~.types.Measurement` records (read through
    ``kind``, ``bytes``, ``seconds`` and ``num_devices``), all from one mesh.
    With ``min_r2`` a poorer fit raises.
    """
    ms = list(measurements)
    if not ms:
        raise PlannerError("from_measurements: no measurements given")
    devices = {m.num_devices for m in ms}
    if len(devices) != 1:
        raise PlannerError(
            f"from_measurements: measurements mix device counts {sorted(devices)}; "
            "fit one profile per mesh"
        )
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for m in ms:
        by_kind[m.kind].append(m)
    fits = {}
    for kind in ("all_reduce", "all_to_all"):
        if not by_kind[kind]:
            raise PlannerError(
                f"from_measurements: no '{kind}' measurements; time at least two sizes"
            )
        fits[kind] = fit_line(
            np.array([m.bytes for m in by_kind[kind]], np.float64),
            np.array([m.seconds for m in by_kind[kind]], np.float64),
            what=f"{kind} timings",
        )
        if min_r2 is not None and fits[kind].r2 < min_r2:
            raise PlannerError(
                f"from_measurements: {kind} fit has r^2 = {fits[kind].r2:.3f} < "
                f"min_r2 = {min_r2}; re-measure with more repeats or lower min_r2"
            )
    return devices.pop(), fits


def fitted_profile_fields(
    measurements: Sequence[Any],
    *,
    name: str,
    source: str,
    devices_per_node: int | None = None,
    ar_algorithm: str = "ring",
    ar_bytes_sent_per_payload_byte: float | None = None,
    latency_s: float = 0.0,
    key_bytes: int = KEY_BYTES,
    min_r2: float | None = None,
) -> dict[str, Any]:
    """The fields of a ``CostProfile`` fitted from measured collectives.

    The all-reduce fit gives ``c_ar_per_byte`` and ``ar_fixed_s``, the
    all-to-all fit ``c_a2a_per_byte`` and ``a2a_fixed_s`` (see
    :func:`fit_collectives`).  ``ar_bytes_sent_per_payload_byte`` defaults
    to the flat ring's 2 (W-1)/W.
    """
    w, fits = fit_collectives(measurements, min_r2=min_r2)
    if ar_bytes_sent_per_payload_byte is None:
        ar_bytes_sent_per_payload_byte = 2.0 * (w - 1) / w
    return dict(
        name=name,
        num_devices=w,
        devices_per_node=devices_per_node,
        c_ar_per_byte=fits["all_reduce"].slope,
        c_a2a_per_byte=fits["all_to_all"].slope,
        latency_s=float(latency_s),
        ar_fixed_s=fits["all_reduce"].intercept,
        a2a_fixed_s=fits["all_to_all"].intercept,
        ar_bytes_sent_per_payload_byte=float(ar_bytes_sent_per_payload_byte),
        ar_algorithm=ar_algorithm,
        key_bytes=int(key_bytes),
        source=source,
        r2_all_reduce=fits["all_reduce"].r2,
        r2_all_to_all=fits["all_to_all"].r2,
    )
