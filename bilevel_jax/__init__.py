"""bilevel_jax: semi-supervised batch active learning via bilevel optimization, in JAX.

Importing the package (every entry point does, before JAX) checks the Python version and, when no
accelerator plugin is installed, defaults JAX to the CPU platform, which silences jax's
"Unable to initialize backend 'tpu'" log line on every run. An explicit $JAX_PLATFORMS is kept;
with the CUDA plugin installed (extra [cuda]) nothing is changed, so GPU runs find the GPU.
"""

import importlib.metadata
import importlib.util
import os
import sys

MIN_PYTHON = (3, 11)
if sys.version_info < MIN_PYTHON:
  raise ImportError(
    f"bilevel_jax needs Python >= {'.'.join(map(str, MIN_PYTHON))} (its pinned numpy, scipy "
    f"and jax do); this is Python {sys.version.split()[0]} ({sys.executable}). Recreate the "
    "environment with python3.11 or newer, e.g. `make setup PY=python3.11`."
  )


def accelerator_plugin_installed() -> bool:
  """Whether a JAX PJRT plugin (CUDA, ROCm, ...) or libtpu is installed in this environment."""
  if importlib.util.find_spec("jax_plugins") or importlib.util.find_spec("libtpu"):
    return True
  return bool(importlib.metadata.entry_points(group="jax_plugins"))


def _default_to_cpu() -> None:
  if "JAX_PLATFORMS" in os.environ or accelerator_plugin_installed():
    return
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # imported before us: jax read the environment already
    sys.modules["jax"].config.update("jax_platforms", "cpu")


_default_to_cpu()
