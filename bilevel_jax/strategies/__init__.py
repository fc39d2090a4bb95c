"""Batch-selection strategies behind one `select(key, ctx, b)` interface, looked up by name."""

from bilevel_jax.strategies.base import (
  RoundContext,
  Strategy,
  available,
  entropy,
  get,
  register,
  select,
  select_with_diagnostics,
  top_b_in_pool,
  uniform_in_pool,
)
from bilevel_jax.strategies import inputs  # noqa: F401  (prepare / check_config hooks)
from bilevel_jax.strategies import baselines  # noqa: F401  (registers the baselines)
from bilevel_jax.strategies import bilevel  # noqa: F401  (registers 'bilevel')
from bilevel_jax.strategies import bilevel_variants  # noqa: F401  (bilevel_embed, _ssl, _tempered)

__all__ = [
  "RoundContext",
  "Strategy",
  "available",
  "entropy",
  "get",
  "register",
  "select",
  "select_with_diagnostics",
  "top_b_in_pool",
  "uniform_in_pool",
]
