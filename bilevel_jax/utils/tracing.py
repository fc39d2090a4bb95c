"""Helpers for checks that run on concrete values and step aside under jit/vmap tracing."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def concrete(x: Any) -> np.ndarray | None:
  """x as a host array, or None for a tracer (value checks then happen only outside jit)."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None
