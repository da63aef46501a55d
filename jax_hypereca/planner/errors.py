"""The planner's exception (imports nothing, so every planner module can raise it)."""

from __future__ import annotations


class PlannerError(ValueError):
    """A planning request that cannot be satisfied or is malformed.

    The message always says what is impossible and which setting to change
    (and to what value) to make it possible.
    """
