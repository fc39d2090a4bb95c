"""ml_collections configs of the experiments (`--config=experiments/configs/NAME.py:MODE`)."""


def check_mode(config_name: str, arg: str | None, default: str, modes: tuple[str, ...]) -> str:
  """The mode named by `arg` (default when empty); ValueError naming the config otherwise."""
  mode = arg or default
  if mode not in modes:
    raise ValueError(f"Unknown {config_name} config mode {mode!r}; expected one of {modes}.")
  return mode
