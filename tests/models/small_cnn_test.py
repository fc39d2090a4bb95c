import jax
import jax.numpy as jnp
import numpy as np

from bilevel_jax import models
from bilevel_jax.models import conv_grad
from bilevel_jax.models.small_cnn import SmallCNN


def test_small_cnn_shapes_and_registry():
  model = models.get_model("small_cnn", num_classes=35, width=2)
  x = jnp.ones((3, 32, 32, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, embedding = model.apply(variables, x, train=False)
  assert logits.shape == (3, 35) and embedding.shape == (3, 128)
  # logits are a linear readout of the embedding (what k-center and t-SNE use)
  head = variables["params"]["head"]
  assert jnp.allclose(logits, embedding @ head["kernel"] + head["bias"], atol=1e-5)


# Unoptimised LLVM codegen: compiling dominates these tests; both sides are compiled alike.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _custom_vjp_count(model, x):
  v = jax.tree.map(
    lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  )
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(v)
  return str(jaxpr).count("custom_vjp_call[")


def test_small_cnn_chunked_kernel_gradients_equal_plain_float64(x64):
  rng = np.random.default_rng(0)  # numpy: eager jax.random calls would compile per shape
  x = jnp.asarray(rng.standard_normal((5, 8, 8, 1)))  # batch 5 in slices of 2: uneven last
  probe_logits = jnp.asarray(rng.standard_normal((5, 4)))
  probe_emb = jnp.asarray(rng.standard_normal((5, 64)))
  plain = SmallCNN(num_classes=4, weight_grad_chunk=0)
  # flax creates float32 parameters even under x64; cast so the whole computation is float64
  init = jax.jit(plain.init).lower(jax.random.key(0), x).compile(compiler_options=_FAST_COMPILE)
  variables = jax.tree.map(lambda a: a.astype(jnp.float64), init(jax.random.key(0), x))
  assert variables["params"]["conv0"]["kernel"].dtype == jnp.float64

  def grads(model):
    def loss(params):
      (logits, emb), upd = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      return jnp.sum(probe_logits * logits) + jnp.sum(probe_emb * emb), upd["batch_stats"]

    f = jax.jit(jax.grad(loss, has_aux=True))
    return f.lower(variables["params"]).compile(compiler_options=_FAST_COMPILE)(variables["params"])

  want = grads(plain)
  chunked = plain.clone(weight_grad_chunk=2)
  assert _custom_vjp_count(chunked, x) == 3  # all three convolutions take the sliced path
  got = grads(chunked)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), got, want)
  # the kernel gradients are not trivially zero
  assert float(jnp.abs(want[0]["conv0"]["kernel"]).max()) > 1e-3


def test_small_cnn_chunk_default_plain_and_none_means_backend_default():
  # as ssl.train.create_model builds it: plain autodiff (benchmarks/results/small_cnn_grad_chunk.json)
  model = models.get_model("small_cnn", num_classes=10, depth=0, width=1, bn_momentum=0.99)
  assert model.weight_grad_chunk == 0
  x = jnp.zeros((17, 8, 8, 1))  # one more than the CPU default slice of 16
  assert _custom_vjp_count(model, x) == 0
  want = 3 if conv_grad.default_weight_grad_chunk() > 0 else 0
  assert _custom_vjp_count(model.clone(weight_grad_chunk=None), x) == want
