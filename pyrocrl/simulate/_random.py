"""Seeded, side-effect-free randomness for simulators."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with torch's global RNG seeded by ``seed``, restoring the caller's RNG
    state afterwards, and yield a NumPy generator seeded the same way.

    Simulators sample through Pyro (which draws from torch's global RNG); this keeps them
    deterministic given ``seed`` without disturbing the user's own random streams.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield np.random.default_rng(int(seed))
