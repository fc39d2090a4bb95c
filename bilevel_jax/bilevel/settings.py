"""The settings of a greedy bilevel selection as one object, `SelectionSettings`.

Every selection entry point (`select.select_batch`, `representer.select_batch`,
`semi_supervised.select_batch_ssl`, `scaling.sharding.select_batch_sharded`,
`scaling.streaming.select_streamed`) builds it from its keyword arguments, validates it once
(`checks.check_settings`) and passes it into its jitted program and the greedy step pieces
(`greedy.py`).

It is a JAX pytree whose leaves are the float settings (`TRACED`: lr, l2 and the exact solver's
tolerances): a jitted function that takes it traces them, so a new lr or l2 reuses the compiled
program. The other fields (`STATIC`) are pytree metadata, static under jit: a new value compiles
a new program, as it must (they set loop lengths, shapes and the solver's code path).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

TRACED = ("lr", "l2", "inner_tol", "ihvp_rtol")
STATIC = (
  "uniform_fraction",
  "inner_steps",
  "batch_size",
  "cg_steps",
  "solver",
  "loss_reduction",
  "inner_max_iter",
  "ihvp_max_iter",
  "newton_cg_max_iter",
)


@functools.partial(jax.tree_util.register_dataclass, data_fields=TRACED, meta_fields=STATIC)
@dataclasses.dataclass(frozen=True)
class SelectionSettings:
  """How to select (the batch size b is the call's own argument).

  Defaults are `select.select_batch`'s; see its docstring for each field.

  Attributes:
    uniform_fraction: share of b drawn uniformly after the greedy picks.
    lr, l2: Adam learning rate and lambda of the inner problem (traced).
    inner_steps, batch_size: Adam steps per greedy step and (point, copy) pairs per minibatch
      (None: the exact full-bank gradient).
    cg_steps: CG iterations of the inverse-HVP (solver="paper").
    solver: "paper" (fixed-step Adam + fixed CG) or "exact" (Newton-CG + preconditioned CG).
    loss_reduction: "sum" (the paper's Eq. 3) or "mean".
    inner_tol, ihvp_rtol: the exact solver's tolerances (traced).
    inner_max_iter, ihvp_max_iter, newton_cg_max_iter: the exact solver's iteration caps.
  """

  uniform_fraction: float = 0.1
  lr: float | jax.Array = 1e-3
  l2: float | jax.Array = 1e-4
  inner_steps: int = 1000
  batch_size: int | None = 64
  cg_steps: int = 30
  solver: str = "paper"
  loss_reduction: str = "sum"
  inner_tol: float | jax.Array = 1e-6
  ihvp_rtol: float | jax.Array = 1e-4
  inner_max_iter: int = 50
  ihvp_max_iter: int = 1000
  newton_cg_max_iter: int = 200


FIELDS = tuple(f.name for f in dataclasses.fields(SelectionSettings))


def traced_as(settings: SelectionSettings, dtype: Any) -> SelectionSettings:
  """`settings` with its traced fields as scalars of `dtype` (the pool's), as the jitted
  programs take them: one dtype for every call, so Python floats and arrays share a program."""
  return dataclasses.replace(
    settings, **{k: jnp.asarray(getattr(settings, k), dtype) for k in TRACED}
  )


def split_options(options: dict[str, Any]) -> tuple[SelectionSettings, dict[str, Any]]:
  """(SelectionSettings of the entries of `options` named like its fields, the other entries);
  fields missing from `options` take their defaults."""
  settings = SelectionSettings(**{k: v for k, v in options.items() if k in FIELDS})
  return settings, {k: v for k, v in options.items() if k not in FIELDS}
