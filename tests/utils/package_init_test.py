"""Package import: Python version guard and JAX's platform default (no 'tpu' log line)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

_REPO = pathlib.Path(__file__).resolve().parents[2]
# An absl entry point as ours are: absl's handler shows jax's INFO lines, among them
# "Unable to initialize backend 'tpu'" when JAX probes for a TPU.
_ENTRY = """
from absl import app
def main(argv):
  import bilevel_jax, jax, os
  print(jax.devices()[0].platform, os.environ.get("JAX_PLATFORMS"))
app.run(main)
"""


def _run(code: str, extra_path: str | None = None, **env) -> subprocess.CompletedProcess:
  environ = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  environ["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, str(_REPO)) if p)
  environ.update(env)
  return subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    env=environ,
    cwd=_REPO,
    check=False,
  )


def test_entry_point_runs_on_cpu_without_the_tpu_log_line():
  out = _run(_ENTRY)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["cpu", "cpu"]
  assert "Unable to initialize backend" not in out.stderr


def test_explicit_jax_platforms_and_installed_plugins_are_left_alone(tmp_path):
  out = _run("import bilevel_jax, os; print(os.environ['JAX_PLATFORMS'])", JAX_PLATFORMS="cpu,")
  assert out.stdout.strip() == "cpu,"
  (tmp_path / "jax_plugins" / "fake_gpu").mkdir(parents=True)  # as jax-cuda12-plugin installs
  code = (
    "import bilevel_jax, os; print(bilevel_jax.accelerator_plugin_installed(), "
    "os.environ.get('JAX_PLATFORMS'))"
  )
  out = _run(code, extra_path=str(tmp_path))
  assert out.stdout.split() == ["True", "None"], out.stderr


def test_old_python_fails_at_import_with_the_version(monkeypatch):
  import bilevel_jax  # pylint: disable=import-outside-toplevel

  source = pathlib.Path(bilevel_jax.__file__).read_text()
  monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
  code = compile(source, "bilevel_jax/__init__.py", "exec")
  try:
    exec(code, {"__name__": "probe"})  # pylint: disable=exec-used
  except ImportError as e:
    assert "Python >= 3.11" in str(e) and "make setup PY=python3.11" in str(e)
  else:
    raise AssertionError("no ImportError on Python 3.10")


def test_pyproject_says_python_3_11_and_an_spdx_license():
  import tomllib  # pylint: disable=import-outside-toplevel

  meta = tomllib.loads((_REPO / "pyproject.toml").read_text())
  assert meta["project"]["requires-python"] == ">=3.11"
  # An SPDX string (PEP 639), not the deprecated {text = ...} table; setuptools >= 77 reads it.
  assert meta["project"]["license"] == "Apache-2.0"
  assert "setuptools>=77" in meta["build-system"]["requires"]
  assert not any("License ::" in c for c in meta["project"].get("classifiers", []))
