"""Argument checks every part of the package shares (no imports from the package)."""

from __future__ import annotations

import numpy as np


def check_positive_int(caller: str, name: str, value):
    """Raise a ``ValueError`` "``caller``: ``name`` must be a positive int, got ..." unless
    ``value`` is a positive Python or NumPy integer (a bool is not one); return ``value``.
    An empty ``caller`` leaves the prefix out."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        prefix = f"{caller}: " if caller else ""
        raise ValueError(f"{prefix}{name} must be a positive int, got {value!r}")
    return value
