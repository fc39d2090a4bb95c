"""Where data and caches live.

Data root: an explicit flag value wins, then `$BILEVEL_JAX_DATA`, then `../shared/data`
(relative to the repository root or the working directory) when it exists.
Cache root: `$BILEVEL_JAX_CACHE`, else `~/.cache/bilevel_jax` (never inside the repository).
"""

from __future__ import annotations

import os
import pathlib

DATA_ENV = "BILEVEL_JAX_DATA"
CACHE_ENV = "BILEVEL_JAX_CACHE"
_REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _fallback_candidates() -> list[pathlib.Path]:
  return [_REPO_ROOT.parent / "shared" / "data", pathlib.Path.cwd().parent / "shared" / "data"]


def resolve_data_root(flag_value: str | os.PathLike | None = None) -> pathlib.Path:
  """Returns the data root folder, raising a clear error if none is usable."""
  if flag_value:
    root = pathlib.Path(flag_value).expanduser()
    source = "the --data_root flag"
  elif os.environ.get(DATA_ENV):
    root = pathlib.Path(os.environ[DATA_ENV]).expanduser()
    source = f"${DATA_ENV}"
  else:
    for candidate in _fallback_candidates():
      if candidate.is_dir():
        return candidate.resolve()
    raise FileNotFoundError(
      f"No data root: pass --data_root, set ${DATA_ENV}, or place the data in ../shared/data "
      f"(looked in {[str(c) for c in _fallback_candidates()]})."
    )
  if not root.is_dir():
    raise FileNotFoundError(f"Data root {root} (from {source}) does not exist or is not a folder.")
  return root.resolve()


def cache_root() -> pathlib.Path:
  """Returns (and creates) the cache folder, outside the repository by default."""
  root = pathlib.Path(os.environ.get(CACHE_ENV, "~/.cache/bilevel_jax")).expanduser()
  root.mkdir(parents=True, exist_ok=True)
  return root
