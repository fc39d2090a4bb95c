"""Runs an experiments module as a user would (a subprocess at the repository root)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def run_module(module: str, *flags: str) -> subprocess.CompletedProcess:
  """`python -m module *flags` from the repository root; output captured, never raises."""
  return subprocess.run(
    [sys.executable, "-m", module, *flags],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
