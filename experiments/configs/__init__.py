"""ml_collections configs of the experiments (`--config=experiments/configs/NAME.py:MODE`)."""

from __future__ import annotations

import re
import sys
from typing import Sequence

from bilevel_jax.al import results


def check_mode(config_name: str, arg: str | None, default: str, modes: tuple[str, ...]) -> str:
  """The mode named by `arg` (default when empty); ValueError naming the config otherwise."""
  mode = arg or default
  if mode not in modes:
    raise ValueError(f"Unknown {config_name} config mode {mode!r}; expected one of {modes}.")
  return mode


def renamed_flags(argv: Sequence[str], flag: str = "config") -> list[str]:
  """One message per override `--config.NAME[=VALUE]` in `argv` (argv[0] is the program) whose
  NAME is a renamed config entry (`bilevel_jax.al.results.RENAMED`), naming the new entry."""
  messages = []
  for arg in argv[1:]:
    if arg == "--":  # absl: what follows is not flags
      break
    match = re.match(rf"--?{re.escape(flag)}\.([\w.]+)(=|$)", arg)
    if match and match.group(1) in results.RENAMED:
      old, new = match.group(1), results.RENAMED[match.group(1)]
      messages.append(
        f"--{flag}.{old} was renamed --{flag}.{new} (same meaning); use the new name. "
        "Result files that record the old name still resume."
      )
  return messages


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parser (`app.run(main, flags_parser=configs.parse_flags)`) that first refuses
  overrides of renamed config entries with a message naming the new entry (without it,
  ml_collections fails with a KeyError traceback that does not)."""
  from absl import app  # pylint: disable=g-import-not-at-top

  messages = renamed_flags(argv)
  if messages:
    sys.stderr.write("FATAL Flags parsing error: " + "\n  ".join(messages) + "\n")
    sys.exit(1)
  return app.parse_flags_with_usage(argv)
