"""Classifiers looked up by name from config (`get_model`)."""
from bilevel_jax.models.wide_resnet import WideResNet, get_model, register

__all__ = ["WideResNet", "get_model", "register"]
