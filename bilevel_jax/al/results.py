"""Result files: one JSON per (dataset, strategy, seed), rewritten atomically every round, and
an append-only journal of its rounds beside it.

Journal (`journal_path`, `<summary>.rounds.jsonl`): one JSON object per line, ended by a newline
and fsynced: first {"header": the record without rounds}, then {"round": entry} per finished
round. A torn write can only damage the line being appended, so if the summary is truncated or
corrupt (a full disk, a copy cut short), `load_for_resume` rebuilds the record from the journal
and loses at most the round that was being written. Result files written before the journal
existed (e.g. committed ones) load from the summary alone.

Schema (FORMAT): format, dataset, strategy, seed, command, config, train_size, test_size,
num_classes, schedule (labeled-set sizes), initial_indices, device, started_utc, updated_utc,
rounds (list of dicts with round, num_labeled, labeled_indices, test_accuracy in [0, 1],
train/eval/select seconds (wall; train is 0 for a reused round-0 model), device, picks,
pick_labels, picks_misclassified and pool_accuracy; the last round has picks None; rounds of a
strategy with diagnostics also have `selection`, {name: per-pick values}, see
`selection_entry`), complete.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from bilevel_jax.utils import io

FORMAT = "bilevel_jax.al/1"
# Config entries that may change between a run and its resumption without changing results.
# vmap_seeds, train.seed_mode and train.seed_threads only choose how trainings are driven (same
# algorithm, float-level differences), so a run may resume with another setting, e.g. on a
# machine without an accelerator. Dotted names address nested entries.
_RESUME_IGNORED = (
  "progress",
  "strategy",
  "seed",
  "tensorboard",
  "data_root",
  "vmap_seeds",
  "report",
  "train.seed_mode",
  "train.seed_threads",
  "train.steps_per_call",
  "train.checkpoint_every",
)
# Entries added to the config later, with the value every earlier run used: equal to it, they
# compare as absent.
_ADDED_LATER = {"train.precision": "float32"}
# Config blocks of the bilevel rule: the paper's and its variants' (the variants' are built
# from the paper's block, experiments/configs/fsdd.py, and carry the same entries).
_BILEVEL_BLOCKS = ("bilevel", "bilevel_tempered", "bilevel_ssl", "bilevel_embed")
# Config entries renamed since results were first written: {old dotted name: new name}. Records
# written before a rename are read with the new names, so they stay resumable; a command line
# overriding an old name is refused, naming the new one (experiments.configs.parse_flags).
# predict_chunk and kernel_chunk only split a computation (model predictions, kernel row
# blocks); inner_batch_size is the inner solver's minibatch of (point, copy) pairs, not the AL
# batch (al.batch_size_per_round).
RENAMED = {
  "al.batch": "al.batch_size_per_round",
  "predict_batch": "predict_chunk",
  **{f"{b}.batch_size": f"{b}.inner_batch_size" for b in _BILEVEL_BLOCKS},
  **{f"{b}.kernel_batch": f"{b}.kernel_chunk" for b in _BILEVEL_BLOCKS},
}


# Config entries added after results were committed, with the value those results used: a
# record written before an entry existed is read with it (bilevel.ntk_*: the legacy kernel).
_ADDED_DEFAULTS = {
  "bilevel": dict(ntk_activation="relu", ntk_leaky_slope=0.0, ntk_final_activation=False)
}


def with_added_defaults(config: dict[str, Any]) -> dict[str, Any]:
  """`config` (a record's) with the entries of _ADDED_DEFAULTS it lacks; blocks it lacks stay
  absent."""
  out = dict(config)
  for block, entries in _ADDED_DEFAULTS.items():
    if isinstance(out.get(block), dict):
      out[block] = {**entries, **out[block]}
  return out


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
  """A copy of a recorded config with renamed entries (RENAMED) under their current names and
  entries added since (_ADDED_DEFAULTS) with the values the record used."""
  out = json.loads(json.dumps(config))
  for old, new in RENAMED.items():
    *old_path, old_key = old.split(".")
    *new_path, new_key = new.split(".")
    src = out
    for k in old_path:
      src = src.get(k) if isinstance(src, dict) else None
    if not isinstance(src, dict) or old_key not in src:
      continue
    dest = out
    for k in new_path:
      dest = dest.setdefault(k, {})
    dest.setdefault(new_key, src.pop(old_key))
  return with_added_defaults(out)


def result_path(
  workdir: str | pathlib.Path, dataset: str, strategy: str, seed: int
) -> pathlib.Path:
  return pathlib.Path(workdir) / f"{dataset}_{strategy}_seed{seed}.json"


def figure2_path(
  workdir: str | pathlib.Path, dataset: str, strategy: str, seed: int
) -> pathlib.Path:
  """Round-0 model outputs (embeddings, predictions, picks) needed by Figure 2."""
  return pathlib.Path(workdir) / f"{dataset}_{strategy}_seed{seed}_round0.npz"


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def comparable_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """`config` without the entries in _RESUME_IGNORED, at any nesting level."""
  return {
    k: comparable_config(v, f"{prefix}{k}.") if isinstance(v, dict) else v
    for k, v in config.items()
    if f"{prefix}{k}" not in _RESUME_IGNORED and _ADDED_LATER.get(f"{prefix}{k}", object()) != v
  }


def new_record(
  *,
  dataset: str,
  strategy: str,
  seed: int,
  command: str,
  config: dict,
  train_size: int,
  test_size: int,
  num_classes: int,
  schedule: list[int],
  initial_indices: np.ndarray,
) -> dict[str, Any]:
  return {
    "format": FORMAT,
    "dataset": dataset,
    "strategy": strategy,
    "seed": int(seed),
    "command": command,
    "config": config,
    "train_size": int(train_size),
    "test_size": int(test_size),
    "num_classes": int(num_classes),
    "schedule": [int(s) for s in schedule],
    "initial_indices": [int(i) for i in initial_indices],
    "rounds": [],
    "complete": False,
    "started_utc": now(),
    "updated_utc": now(),
  }


# Config blocks added after results were committed, read only by the strategies they name: a
# result written before one existed is compared as if it had the new run's block.
ADDED_BLOCKS = ("bilevel_tempered", "bilevel_ssl", "bilevel_embed")


# config.bilevel entries added after results were committed, and what a result written before
# them used: the first solver and loss convention. The exact solver's tolerances did not exist
# either and do not affect the paper solver, so a missing one is read as the new run's value.
_LEGACY_BILEVEL = {"solver": "paper", "loss_reduction": "mean"}
_LEGACY_SOLVER_ONLY = (
  "inner_tol",
  "ihvp_rtol",
  "inner_max_iter",
  "ihvp_max_iter",
  "newton_cg_max_iter",
)


def with_legacy_defaults(
  config: dict[str, Any], reference: dict[str, Any] | None = None
) -> dict[str, Any]:
  """`config` (a result's) with the bilevel entries it predates filled in as they were used
  (`_LEGACY_BILEVEL`; the solver-only ones from `reference`, the config compared against)."""
  if not isinstance(config.get("bilevel"), dict):
    return config
  bilevel = dict(config["bilevel"])
  ref = (reference or {}).get("bilevel") or {}
  for key, value in _LEGACY_BILEVEL.items():
    if key in ref:  # compared against a config that has the key
      bilevel.setdefault(key, value)
  for key in _LEGACY_SOLVER_ONLY:
    if key not in bilevel and key in ref:
      bilevel[key] = ref[key]
  return {**config, "bilevel": bilevel}


def with_added_blocks(config: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
  """`config` (a result's) with the ADDED_BLOCKS it lacks taken from `reference`."""
  missing = {k: reference[k] for k in ADDED_BLOCKS if k not in config and k in reference}
  return {**config, **missing}


def journal_path(path: str | pathlib.Path) -> pathlib.Path:
  """The per-round journal beside result file `path`."""
  path = pathlib.Path(path)
  return path.with_name(path.stem + ".rounds.jsonl")


def _header(record: dict[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in record.items() if k not in ("rounds", "complete", "updated_utc")}


def _journal_line(obj: Any) -> bytes:
  return (json.dumps(io.jsonable(obj), allow_nan=False) + "\n").encode()


def read_journal(path: str | pathlib.Path) -> tuple[dict[str, Any] | None, list[dict], int]:
  """(header, rounds, bytes) of the journal's complete lines (a torn last line is ignored).

  Returns (None, [], 0) without a journal or without a complete header line.
  """
  try:
    data = journal_path(path).read_bytes()
  except FileNotFoundError:
    return None, [], 0
  header, rounds, good = None, [], 0
  for line in data.split(b"\n")[:-1]:  # the part after the last newline is torn
    try:
      obj = json.loads(line)
    except ValueError:
      break
    if header is None:
      if not isinstance(obj, dict) or not isinstance(obj.get("header"), dict):
        break
      header = obj["header"]
    elif isinstance(obj, dict) and isinstance(obj.get("round"), dict):
      rounds.append(obj["round"])
    else:
      break
    good += len(line) + 1
  return header, (rounds if header is not None else []), good if header is not None else 0


def _from_journal(path: pathlib.Path) -> dict[str, Any] | None:
  header, rounds, _ = read_journal(path)
  if header is None:
    return None
  record = dict(header, rounds=rounds, updated_utc=header.get("started_utc"))
  schedule = record.get("schedule") or [0]
  record["complete"] = bool(rounds) and rounds[-1].get("num_labeled", -1) >= schedule[-1]
  return record


def load(path: str | pathlib.Path) -> dict[str, Any]:
  """The record at `path`, from its summary or, where the journal holds more rounds (a torn or
  stale summary), from its journal.

  Raises:
    ValueError: the summary is unreadable and there is no journal to rebuild it from.
  """
  path = pathlib.Path(path)
  try:
    record, error = io.read_json(path), None
    if not isinstance(record, dict) or not isinstance(record.get("rounds"), list):
      record, error = None, "not a result record"
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    record, error = None, str(e)
  journaled = _from_journal(path)
  if journaled is not None and (record is None or len(journaled["rounds"]) > len(record["rounds"])):
    if record is None:
      import logging  # pylint: disable=g-import-not-at-top

      logging.getLogger(__name__).warning(
        "%s is unreadable (%s); rebuilt %d round(s) from %s.",
        path,
        error,
        len(journaled["rounds"]),
        journal_path(path),
      )
    return journaled
  if record is None:
    raise ValueError(
      f"{path} is not a readable result file ({error}) and has no journal "
      f"{journal_path(path).name} to rebuild it from; delete it to start this run "
      "afresh."
    )
  return record


def load_for_resume(path: pathlib.Path, expected: dict[str, Any]) -> dict[str, Any]:
  """Reads a partial result (summary or journal) and checks it belongs to the same experiment."""
  record = load(path)
  for key in (
    "format",
    "dataset",
    "strategy",
    "seed",
    "train_size",
    "test_size",
    "num_classes",
    "schedule",
    "initial_indices",
  ):
    if record.get(key) != expected[key]:
      raise ValueError(
        f"Cannot resume from {path}: its {key}={record.get(key)!r} differs from "
        f"this run's {expected[key]!r}."
      )
  old = comparable_config(
    with_legacy_defaults(
      with_added_blocks(upgrade_config(record["config"]), expected["config"]), expected["config"]
    )
  )
  new = comparable_config(expected["config"])
  if old != new:
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    raise ValueError(
      f"Cannot resume from {path}: config entries {diff} differ from the run "
      "that wrote it; use a new --workdir or the same config."
    )
  return record


def selection_entry(diagnostics: dict[str, Any]) -> dict[str, Any]:
  """A strategy's diagnostics {name: array} as JSON lists of floats, 8 significant digits.

  Significant digits, not decimals: a converged CG residual (~1e-9) must not become 0.0.
  A non-finite value (which JSON cannot hold) becomes null.
  """
  out = {}
  for k, v in diagnostics.items():
    a = np.asarray(v, np.float64)
    vals = [float(f"{x:.8g}") if math.isfinite(x) else None for x in a.ravel()]
    out[k] = np.array(vals, dtype=object).reshape(a.shape).tolist()
  return out


def labeled_after(record: dict[str, Any]) -> np.ndarray:
  """Labeled indices (in labeling order) after the last completed round's picks."""
  labeled = list(record["initial_indices"])
  for r in record["rounds"]:
    labeled += list(r["picks"] or [])
  return np.asarray(labeled, np.int32)


# Per-round blocks of solver diagnostics, where a non-finite value is data, not a bug.
_DIAGNOSTIC_KEYS = ("selection", "pick_diagnostics")


def _append_journal(path: pathlib.Path, record: dict[str, Any]) -> None:
  """Brings the journal up to `record`: appends its new rounds, fsynced; rewrites the journal
  (atomically) if it belongs to another run or disagrees with the record."""
  header, rounds, good = read_journal(path)
  jpath = journal_path(path)
  if header != io.jsonable(_header(record)) or rounds != io.jsonable(
    record["rounds"][: len(rounds)]
  ):
    lines = [_journal_line({"header": _header(record)})]
    lines += [_journal_line({"round": r}) for r in record["rounds"]]
    io.atomic_write_bytes(jpath, b"".join(lines))
    return
  new = b"".join(_journal_line({"round": r}) for r in record["rounds"][len(rounds) :])
  if not new:
    return
  fd = os.open(jpath, os.O_WRONLY)
  try:
    os.ftruncate(fd, good)  # drop a torn tail, so the new lines start on a line of their own
    os.pwrite(fd, new, good)
    os.fsync(fd)
  finally:
    os.close(fd)


def save(path: pathlib.Path, record: dict[str, Any]) -> None:
  """Appends the record's new rounds to the journal, then rewrites the summary atomically.

  Raises ValueError (before writing anything) if the record holds NaN or inf outside the
  rounds' diagnostic blocks (where they are written as null): JSON has no such numbers.
  """
  path = pathlib.Path(path)
  record["updated_utc"] = now()
  for entry in record["rounds"]:  # diagnostics may be inf (e.g. a CG residual of 0 / 0): null
    for key in _DIAGNOSTIC_KEYS:
      if key in entry:
        entry[key] = io.nonfinite_to_null(io.jsonable(entry[key]))
  io.check_finite_json(record, str(path))
  _append_journal(path, record)
  io.atomic_write_json(path, record)
