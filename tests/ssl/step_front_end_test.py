"""The MixMatch step's batched front end (augment_and_featurize.groups) against the previous
formulation (one augment_and_featurize call for the labeled and one for the unlabeled batch)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax import audio
from bilevel_jax.models import wide_resnet
from bilevel_jax.ssl import train as train_lib

T = 16000


class _TinyNet(nn.Module):
  """Conv -> BN -> ReLU -> pool -> dense: cheap to compile, same call signature as WideResNet."""

  num_classes: int = 3
  depth: int = 0
  width: int = 1
  bn_momentum: float = 0.5

  @nn.compact
  def __call__(self, x, train=False):
    y = nn.Conv(4, (3, 3), strides=(4, 4), name="conv0")(x)
    y = nn.relu(
      nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn0")(y)
    )
    emb = jnp.mean(y, axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(emb), emb


wide_resnet.register("tiny_front_end_test", _TinyNet)


def _two_calls(key, waveforms, noise):
  """augment_and_featurize without the `groups` attribute: make_step's two-call path."""
  return audio.augment_and_featurize(key, waveforms, noise)


def _data(n=12, num_classes=3):
  rng = np.random.default_rng(0)
  waves = np.zeros((n, T), np.float32)
  waves[:, 4000:12000] = 0.3 * rng.standard_normal((n, 8000))
  return train_lib.TrainData(
    jnp.asarray(waves),
    jnp.asarray(np.arange(n) % num_classes, jnp.int32),
    jnp.asarray(rng.standard_normal((1, 20000)).astype(np.float32)),
    jnp.float32(0.5),
    jnp.float32(0.2),
  )


@pytest.mark.slow
def test_grouped_front_end_step_equals_two_call_step():
  tc = train_lib.TrainConfig(
    method="mixmatch",
    steps=10,
    batch_size=4,
    model="tiny_front_end_test",
    rampup_steps=1,
    bn_momentum=0.5,
  )
  model = train_lib.create_model(tc, 3)
  data, labeled = _data(), jnp.arange(6, dtype=jnp.int32)
  # At step 3 the ramp (1 step) is over, so the unlabeled loss enters with weight lambda_u.
  state = train_lib.init_state(tc, model, jax.random.key(0))._replace(step=jnp.int32(3))
  assert getattr(audio.augment_and_featurize, "groups", None) is not None
  # Unoptimised LLVM codegen halves the compile time; both programs are compiled alike.
  fast_compile = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  outs = [
    jax.jit(train_lib.make_step(tc, model, 3, audio.featurize, fn))
    .lower(state, data, labeled)
    .compile(compiler_options=fast_compile)(state, data, labeled)
    for fn in (audio.augment_and_featurize, _two_calls)
  ]
  (new, m_new), (old, m_old) = outs
  assert float(m_new["weight_u"]) == tc.lambda_u
  for k in ("loss", "loss_x", "loss_u"):
    np.testing.assert_allclose(m_new[k], m_old[k], rtol=1e-5, err_msg=k)
  # Batch statistics are direct functions of the features of the MixMatch batch.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    new.batch_stats,
    old.batch_stats,
  )
  # Weights. Adam's first step moves each weight by ~lr * g / |g|, so where a gradient is
  # zero up to rounding (conv biases followed by batch norm, a few kernel entries) float-level
  # differences become +-lr noise in either formulation. Elsewhere the steps must be equal.
  for path, a in jax.tree_util.tree_leaves_with_path(new.params):
    b = old.params[path[0].key][path[1].key]
    name = jax.tree_util.keystr(path)
    diff = np.abs(np.asarray(a) - np.asarray(b))
    assert diff.max() <= 2.5 * tc.lr, name
    if not (path[0].key.startswith("conv") and path[1].key == "bias"):
      assert np.mean(diff <= 1e-6) >= 0.999, (name, np.mean(diff <= 1e-6))
