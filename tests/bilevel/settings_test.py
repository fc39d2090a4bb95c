"""SelectionSettings: one object for every selection entry point; floats traced, rest static."""

from __future__ import annotations

import dataclasses
import inspect

import jax
import numpy as np
import pytest

from bilevel_jax.bilevel import checks
from bilevel_jax.bilevel import representer
from bilevel_jax.bilevel import select
from bilevel_jax.bilevel import semi_supervised
from bilevel_jax.bilevel import settings as settings_lib
from bilevel_jax.strategies import bilevel as paper_strategy
from tests.bilevel import problems


def test_fields_are_select_batchs_options_in_order_with_its_defaults():
  """The entry points build the object positionally and the strategies take their options and
  defaults from it: it must follow select_batch's keywords."""
  params = inspect.signature(select.select_batch).parameters
  want = {k: params[k].default for k in settings_lib.FIELDS}
  got = {f.name: f.default for f in dataclasses.fields(settings_lib.SelectionSettings)}
  assert got == want
  order = [k for k in params if k in settings_lib.FIELDS]
  assert order == list(settings_lib.FIELDS)
  assert set(settings_lib.FIELDS) == set(settings_lib.TRACED) | set(settings_lib.STATIC)
  options = inspect.signature(paper_strategy.bilevel).parameters
  assert {k: options[k].default for k in settings_lib.FIELDS} == want


def test_floats_are_the_pytree_leaves():
  s = settings_lib.SelectionSettings(lr=0.5, solver="exact")
  leaves, treedef = jax.tree.flatten(s)
  assert leaves == [0.5, 1e-4, 1e-6, 1e-4]  # lr, l2, inner_tol, ihvp_rtol
  assert jax.tree.unflatten(treedef, leaves) == s
  # Static fields are part of the structure: another solver is another program.
  assert treedef != jax.tree.structure(settings_lib.SelectionSettings(lr=0.5))


@pytest.mark.parametrize(
  "changes, match",
  [
    (dict(solver="newton"), "solver must be one of"),
    (dict(loss_reduction="avg"), "loss_reduction must be"),
    (dict(cg_steps=0), "cg_steps must be an int >= 1"),
    (dict(ihvp_max_iter=1.5), "ihvp_max_iter must be an int >= 1"),
    (dict(l2=float("nan")), "l2 must be a finite scalar >= 0"),
    (dict(ihvp_rtol=-1.0), "ihvp_rtol must be a finite scalar >= 0"),
  ],
)
def test_one_function_checks_every_setting(changes, match):
  checks.check_settings(3, settings_lib.SelectionSettings())
  with pytest.raises(ValueError, match=match):
    checks.check_settings(3, settings_lib.SelectionSettings(**changes))
  with pytest.raises(ValueError, match="b must be a positive int"):
    checks.check_settings(0, settings_lib.SelectionSettings())


def _args(prob):
  bank_fn, params = select.precomputed_bank(prob.pool_bank)
  lab = prob.labeled_idx
  return prob.pool_z, prob.pseudo, lab, prob.labeled_labels, prob.pool_bank[lab], bank_fn, params


def test_lr_and_l2_do_not_recompile_the_other_formulations():
  prob = problems.make_problem(seed=2, p=16, m=4, a=2, n_labeled=3, dtype=np.float32)
  z, y, lab, labels, bank, bank_fn, params = _args(prob)
  fast = dict(b=3, inner_steps=3, batch_size=4, cg_steps=2)
  calls = {
    representer._select: lambda **kw: representer.select_batch(
      jax.random.key(0), z, y, lab, labels, bank, bank_fn, params, candidates=4, **kw
    ),
    semi_supervised._select: lambda **kw: semi_supervised.select_batch_ssl(
      jax.random.key(0), z, y, y.max(-1), lab, labels, bank, bank_fn, params, **kw
    ),
  }
  for core, call in calls.items():
    before = core._cache_size()  # pylint: disable=protected-access
    for lr, l2 in ((1e-2, 1e-3), (3e-2, 1e-4)):
      call(lr=lr, l2=l2, **fast)
    assert core._cache_size() - before == 1  # pylint: disable=protected-access
