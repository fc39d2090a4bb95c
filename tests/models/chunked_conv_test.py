"""The chunked kernel gradient of the classifiers' convolutions (models.conv_grad, WideResNet's
weight_grad_chunk) against plain autodiff of lax.conv_general_dilated."""

import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax.models import WideResNet
from bilevel_jax.models import conv_grad
from bilevel_jax.models import wide_resnet

_DN = ("NHWC", "HWIO", "NHWC")
# Unoptimised LLVM codegen: compiling dominates these tests; both sides are compiled alike.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _net(conv, ws, x):
  """3x3 stride 1, 3x3 stride 2 and 1x1 stride 2 convolutions, as in a WRN block."""
  h = jnp.tanh(conv(x, ws[0], (1, 1), "SAME", dimension_numbers=_DN))
  h = jnp.tanh(conv(h, ws[1], (2, 2), "SAME", dimension_numbers=_DN))
  return h + conv(x, ws[2], (2, 2), "SAME", dimension_numbers=_DN)


def _check(dtype, tol):
  rng = np.random.default_rng(0)  # numpy: eager jax.random calls would compile per shape
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  x = normal(5, 8, 8, 2)  # batch 5 in slices of 2: uneven last slice
  ws = [normal(3, 3, 2, 3), normal(3, 3, 3, 4), normal(1, 1, 2, 4)]
  probe = normal(5, 4, 4, 4)

  def grads(conv):
    f = jax.jit(jax.grad(lambda ws, x: jnp.sum(probe * _net(conv, ws, x)), (0, 1)))
    return f.lower(ws, x).compile(compiler_options=_FAST_COMPILE)(ws, x)

  want = grads(jax.lax.conv_general_dilated)
  got = grads(conv_grad.chunked_weight_grad_conv(2))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), got, want)
  np.testing.assert_array_equal(
    _net(conv_grad.chunked_weight_grad_conv(2), ws, x), _net(jax.lax.conv_general_dilated, ws, x)
  )


def test_chunked_kernel_gradient_equals_plain_float32():
  _check(jnp.float32, 1e-5)


def test_chunked_kernel_gradient_equals_plain_float64(x64):
  _check(jnp.float64, 1e-12)


def test_wide_resnet_uses_it_and_default_is_cpu_only():
  # the names stay importable from wide_resnet (moved to conv_grad, shared with small_cnn)
  assert wide_resnet.chunked_weight_grad_conv is conv_grad.chunked_weight_grad_conv
  assert wide_resnet.default_weight_grad_chunk() == (16 if jax.default_backend() == "cpu" else 0)
  x = jnp.zeros((4, 32, 32, 1))

  def custom_vjp_count(chunk):
    model = WideResNet(num_classes=3, depth=10, width=1, weight_grad_chunk=chunk)
    v = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype),
      jax.eval_shape(lambda: model.init(jax.random.key(0), x)),
    )
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(v)
    return str(jaxpr).count("custom_vjp_call[")

  # All 9 convolutions of WRN-10-1 (stem, 3 x 2 3x3, 2 shortcuts) when batch 4 > chunk 2; a
  # batch <= chunk, or chunk 0, stays plain.
  assert (custom_vjp_count(2), custom_vjp_count(4), custom_vjp_count(0)) == (9, 0, 0)
