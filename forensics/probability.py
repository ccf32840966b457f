"""Logits and probabilities of the discriminator's "fake" class (numpy, float64)."""

from __future__ import annotations

import math

import numpy as np


def sigmoid(z) -> np.ndarray:
    """Logits (any shape, any float dtype) -> fake probabilities, float64 of the same shape."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def logit(p: float) -> float:
    """A probability threshold in (0, 1) -> the logit it corresponds to: log(p / (1 - p))."""
    return float(math.log(p / (1 - p)))
