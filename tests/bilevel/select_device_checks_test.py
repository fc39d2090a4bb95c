"""select_batch(validate=True) checks a device-resident pool without copying it to the host."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src import array as jax_array

from bilevel_jax.bilevel import select
from tests.bilevel import problems

_FAST = dict(inner_steps=10, batch_size=8, cg_steps=5, lr=1e-2, l2=1e-3)


def _device_args(prob):
  bank_fn, params = select.precomputed_bank(prob.pool_bank)
  return (
    jnp.asarray(prob.pool_z),
    jnp.asarray(prob.pseudo),
    prob.labeled_idx,
    prob.labeled_labels,
    jnp.asarray(prob.pool_bank[prob.labeled_idx]),
    bank_fn,
    params,
  )


@pytest.fixture
def fetched(monkeypatch):
  """Sizes of the device arrays copied to the host while the test runs."""
  sizes = []
  value = jax_array.ArrayImpl._value

  def recording(self):
    sizes.append(int(np.prod(self.shape)))
    return value.fget(self)

  monkeypatch.setattr(jax_array.ArrayImpl, "_value", property(recording))
  return sizes


def test_validation_fetches_scalars_not_the_pool(fetched):
  prob = problems.make_problem(seed=3, p=400, n_labeled=3, dtype=np.float32)
  args = _device_args(prob)
  select.select_batch(jax.random.key(0), *args, b=4, **_FAST)  # compiles
  fetched.clear()
  select.select_batch(jax.random.key(1), *args, b=4, **_FAST)
  # The (n,) greedy scores and a few counts; the pool has 400 rows (x 3 classes, x m features).
  assert fetched and max(fetched) < 400, fetched


def test_device_checks_name_the_bad_entry():
  prob = problems.make_problem(seed=3, p=12, n_labeled=3, dtype=np.float32)
  pool_z, pseudo, *rest = _device_args(prob)
  with pytest.raises(ValueError, match=r"pool_z has 1 NaN/inf entries \(first at index \[7, 1\]\)"):
    select.select_batch(
      jax.random.key(0), pool_z.at[7, 1].set(jnp.nan), pseudo, *rest, b=2, **_FAST
    )
  with pytest.raises(ValueError, match=r"rows must sum to 1 .* row 5 sums to 1.5"):
    select.select_batch(jax.random.key(0), pool_z, pseudo.at[5].mul(1.5), *rest, b=2, **_FAST)
  with pytest.raises(ValueError, match=r"row 4 has a negative entry"):
    select.select_batch(jax.random.key(0), pool_z, pseudo.at[4, 0].set(-0.5), *rest, b=2, **_FAST)
