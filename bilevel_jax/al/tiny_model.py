"""A very small CNN for CPU-tiny AL runs (tests, notebook): seconds to compile and train.

Registered in the model registry as "al_tiny_cnn"; same call signature as WideResNet:
(B, 32, 32, 1) -> (logits (B, C), embedding (B, width * 8)). `depth` is accepted and ignored.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bilevel_jax import models

NAME = "al_tiny_cnn"


class TinyCNN(nn.Module):
  num_classes: int = 10
  depth: int = 0
  width: int = 1
  bn_momentum: float = 0.99

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    y = nn.Conv(8 * self.width, (3, 3), strides=(2, 2), name="conv")(x)     # (B, 16, 16, 8w)
    y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn")(y)
    embedding = jnp.mean(nn.relu(y), axis=(1, 2))                            # (B, 8w)
    return nn.Dense(self.num_classes, name="head")(embedding), embedding


models.register(NAME, TinyCNN)
