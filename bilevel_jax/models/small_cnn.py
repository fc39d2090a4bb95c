"""A small CNN for the 2-core CPU main job: three strided 3x3 conv/BN/ReLU stages (16/32/64
channels at width 1) and a linear head; same call signature as WideResNet:
(B, 32, 32, 1) -> (logits (B, C), embedding (B, channels[-1] * width)). `depth` is accepted and ignored.
Registered as "small_cnn"; "tiny_cnn" is the same with one 8-channel stage (tests, notebook).

Why not a smaller WRN: the README's 15-minute main job trains 5 models; a WRN-10-1 MixMatch
step costs ~0.44 s on 2 CPU cores, this model's ~0.19 s (measured side by side with
benchmarks.vmap_seeds), most of which is the on-device augmentation and log-mel.
`weight_grad_chunk` only changes how kernel gradients are summed
(`conv_grad.chunked_weight_grad_conv`; None: `conv_grad.default_weight_grad_chunk()`), not the
function. It defaults to 0 (plain autodiff), unlike WideResNet: on the quick config's step,
slices of 8/16/32 cut the model's forward+backward by ~10% but the whole step (mostly the
front end) by only 2-4%, within the round-to-round spread, and made the step's compile
slower (benchmarks/results/small_cnn_grad_chunk.json).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bilevel_jax.models import conv_grad
from bilevel_jax.models import wide_resnet

NAME = "small_cnn"
TINY_NAME = "tiny_cnn"  # one strided 8-channel stage: seconds to compile and train (tests)


class SmallCNN(nn.Module):
  num_classes: int = 10
  depth: int = 0
  width: int = 1
  bn_momentum: float = 0.99
  channels: Sequence[int] = (16, 32, 64)  # per strided stage, times width
  weight_grad_chunk: int | None = 0  # 0: plain autodiff; None: the CPU default

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    chunk = (
      conv_grad.default_weight_grad_chunk()
      if self.weight_grad_chunk is None
      else self.weight_grad_chunk
    )
    conv_fn = conv_grad.chunked_weight_grad_conv(chunk)
    y = x
    for i, stage_channels in enumerate(self.channels):  # each stage halves H and W
      y = nn.Conv(
        stage_channels * self.width,
        (3, 3),
        strides=(2, 2),
        conv_general_dilated=conv_fn,
        name=f"conv{i}",
      )(y)
      y = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name=f"bn{i}")(y)
      y = nn.relu(y)
    embedding = jnp.mean(y, axis=(1, 2))  # (B, channels[-1] * width)
    return nn.Dense(self.num_classes, name="head")(embedding), embedding


wide_resnet.register(NAME, SmallCNN)
wide_resnet.register(TINY_NAME, functools.partial(SmallCNN, channels=(8,)))
