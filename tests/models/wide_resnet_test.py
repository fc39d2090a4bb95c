"""WRN shapes and the closed-form parameter count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bilevel_jax.models import WideResNet, get_model


def closed_form_param_count(depth: int, width: int, in_channels: int, num_classes: int) -> int:
  """Counts the MixMatch WRN's parameters by hand: conv kernels + biases, BN scale + offset."""
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  bn = lambda c: 2 * c
  n = (depth - 4) // 6
  total = conv(3, in_channels, 16)
  cin = 16
  for stage in range(3):
    w = 16 * width * 2**stage
    total += bn(cin) + conv(3, cin, w) + bn(w) + conv(3, w, w)
    if cin != w or stage > 0:
      total += conv(1, cin, w)  # shortcut projection
    total += (n - 1) * (2 * bn(w) + 2 * conv(3, w, w))
    cin = w
  return total + bn(cin) + cin * num_classes + num_classes


def count_params(model, input_shape):
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape)))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("depth,width,channels", [(28, 2, 3), (28, 2, 1), (10, 1, 1), (16, 3, 1)])
def test_param_count_matches_closed_form(depth, width, channels):
  model = WideResNet(num_classes=10, depth=depth, width=width)
  assert count_params(model, (1, 32, 32, channels)) == closed_form_param_count(
    depth, width, channels, 10
  )


def test_wrn28_2_is_about_1_47m_params():
  model = WideResNet(num_classes=10, depth=28, width=2)
  n = count_params(model, (1, 32, 32, 3))
  assert abs(n - 1.47e6) < 0.01e6, n


def test_output_shapes_and_batch_stats_update():
  model = get_model("wide_resnet", num_classes=7, depth=10, width=1)
  x = jax.random.normal(jax.random.key(1), (3, 32, 32, 1))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  logits, emb = jax.jit(model.apply)(variables, x)
  assert logits.shape == (3, 7) and emb.shape == (3, 64)
  (logits_t, _), upd = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
    variables, x
  )
  assert logits_t.shape == (3, 7)
  changed = jax.tree.map(
    lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"], upd["batch_stats"]
  )
  assert all(jax.tree.leaves(changed))
  # The head reads the embedding: logits = emb @ W + b.
  head = variables["params"]["head"]
  np.testing.assert_allclose(logits, emb @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="depth must be 6n\\+4"):
    WideResNet(depth=12).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
  with pytest.raises(ValueError, match="Unknown model name"):
    get_model("resnet9000")
