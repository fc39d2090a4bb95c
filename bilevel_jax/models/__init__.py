"""Classifiers looked up by name from config (`get_model`)."""

from bilevel_jax.models.wide_resnet import WideResNet, get_model, register
from bilevel_jax.models import small_cnn  # noqa: F401,E402  (registers "small_cnn")

__all__ = ["WideResNet", "get_model", "register"]
