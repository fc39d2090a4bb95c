"""A very small CNN for CPU-tiny AL runs (tests, notebook): seconds to compile and train.

Registered as "al_tiny_cnn": `SmallCNN` with one strided 8-channel stage (times width),
(B, 32, 32, 1) -> (logits (B, C), embedding (B, 8 * width)).
"""
from __future__ import annotations

import functools

from bilevel_jax import models
from bilevel_jax.models.small_cnn import SmallCNN

NAME = "al_tiny_cnn"

models.register(NAME, functools.partial(SmallCNN, channels=(8,)))
