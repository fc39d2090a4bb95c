import jax
import jax.numpy as jnp

from bilevel_jax import models


def test_small_cnn_shapes_and_registry():
  model = models.get_model("small_cnn", num_classes=35, width=2)
  x = jnp.ones((3, 32, 32, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  logits, embedding = model.apply(variables, x, train=False)
  assert logits.shape == (3, 35) and embedding.shape == (3, 128)
  # logits are a linear readout of the embedding (what k-center and t-SNE use)
  head = variables["params"]["head"]
  assert jnp.allclose(logits, embedding @ head["kernel"] + head["bias"], atol=1e-5)
