"""Per-destination exchange capacities: how many ids one device may send one
owner in one call, per exchange group. Each value is compiled into the step
(static shapes), so it is chosen on the host:

- first, from the batch: ``slack`` x the even share of a device's ids (or the
  user's value), never more than all of a device's ids;
- a call that needs more is detected on the device before anything is
  exchanged (see lookup.py), and the host re-runs it with the observed
  count x ``GROWTH`` (a few such re-runs at most, never a silent drop);
- every ``retune_every`` calls the values shrink to the largest count seen
  (x ``REFIT``), so padding stays low while the id mix drifts.

The train step and the eval function each keep their own capacities: eval
batches are often larger than train batches.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Mapping

log = logging.getLogger("jax_hypereca")

Group = tuple[str, ...]
GROWTH = 1.25  # headroom over the count that overflowed
REFIT = 1.05   # headroom over the largest count seen when shrinking
MIN_CAPACITY = 8


def round8(x: float) -> int:
    """`x` rounded up to a multiple of 8."""
    return int(math.ceil(x / 8)) * 8


def initial_capacity(ids_per_device: int, num_shards: int, slack: float = 2.0) -> int:
    """A first per-destination capacity for a group whose local batch holds
    `ids_per_device` ids: slack x the even share, at most all of them."""
    if num_shards == 1:
        return max(MIN_CAPACITY, round8(ids_per_device))
    even = math.ceil(ids_per_device / num_shards * slack)
    return max(MIN_CAPACITY, min(round8(ids_per_device), round8(even)))


class ExchangeCapacities:
    """The capacities of one kind of call (train or eval), per group.

    Args:
      ids_per_device: ``(group, global batch size) -> ids one device looks up``
        (the most it can ever send one owner).
      num_shards: devices the tables are sharded over.
      slack: first capacity = slack x the even share of a device's ids.
      first: the user's first capacity per group (overrides the slack rule).
      retune_every: calls between shrinking re-fits (0: never shrink).
    """

    def __init__(self, ids_per_device: Callable[[Group, int], int], num_shards: int, *,
                 slack: float = 2.0, first: Mapping[Group, int] | None = None,
                 retune_every: int = 0, what: str = "step"):
        self._ids_per_device = ids_per_device
        self.num_shards = num_shards
        self.slack = slack
        self.retune_every = retune_every
        self.what = what
        self._first = dict(first or {})
        self._caps: dict[Group, int] = {}
        self._seen: dict[Group, int] = {}

    def current(self, groups: tuple[Group, ...], batch_size: int) -> tuple[int, ...]:
        """The capacity of each group for a call on `batch_size` samples."""
        for g in groups:
            if g not in self._caps:
                self._caps[g] = self._first.get(g) or initial_capacity(
                    self._ids_per_device(g, batch_size), self.num_shards, self.slack)
        return tuple(self._caps[g] for g in groups)

    def observe(self, need: Mapping[Group, int], batch_size: int, calls: int) -> bool:
        """Records the largest per-destination count each group needed in a
        call (`calls` calls done so far). Returns True when some capacity was
        too small: it has been raised and the call must be re-run (it
        exchanged nothing)."""
        overflow = False
        for g, n in need.items():
            self._seen[g] = max(self._seen.get(g, 0), n)
            if n > self._caps[g]:
                new = min(round8(self._ids_per_device(g, batch_size)), round8(n * GROWTH))
                log.info("tables %s: %d ids for one destination > capacity %d; recompiling "
                         "the %s with %d and re-running it", list(g), n, self._caps[g], self.what,
                         new)
                self._caps[g] = new
                overflow = True
        if not overflow and self.retune_every and calls % self.retune_every == 0:
            self._refit()
        return overflow

    def _refit(self) -> None:
        for g, seen in self._seen.items():
            fit = max(MIN_CAPACITY, round8(seen * REFIT))
            if fit < 0.9 * self._caps[g]:
                log.info("tables %s: capacity %d -> %d (largest count seen: %d)", list(g),
                         self._caps[g], fit, seen)
                self._caps[g] = fit
        self._seen = {}
