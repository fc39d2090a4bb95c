"""Shared helper of the AL tests: a config with dotted overrides."""

from __future__ import annotations


def with_overrides(config, overrides: dict):
  """`config` with entries set by dotted name, e.g. {"al.budget": 20}; returns config."""
  config.progress = False
  for k, v in overrides.items():
    node = config
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return config
