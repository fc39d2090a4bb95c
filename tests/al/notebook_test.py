"""Executes notebooks/custom_strategy.ipynb at the CPU-tiny scale with the venv's interpreter."""

import json
import pathlib
import sys

import pytest

_NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "custom_strategy.ipynb"


@pytest.mark.slow
def test_custom_strategy_notebook_runs(tmp_path, fsdd_root, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  # A "python3" kernelspec that runs this interpreter (the venv's), ahead of any system one.
  spec = tmp_path / "jupyter" / "kernels" / "python3"
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(
    json.dumps(
      {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (bilevel_jax venv)",
        "language": "python",
      }
    )
  )
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("AL_NOTEBOOK_WORKDIR", str(tmp_path / "work"))
  nb = nbformat.read(_NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
    nb,
    kernel_name="python3",
    timeout=600,
    resources={"metadata": {"path": str(_NOTEBOOK.parents[1])}},
  )
  client.execute()
  outputs = "".join(
    o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
  )
  assert "margin" in outputs
  assert (tmp_path / "work" / "fsdd_margin_seed0.json").exists()
  assert (tmp_path / "work" / "margin_vs_uniform.png").stat().st_size > 0
