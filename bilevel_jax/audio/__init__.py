"""Log-mel features and waveform augmentations in JAX (run on device, inside jit)."""

from bilevel_jax.audio.augmentations import (
  AugmentParams,
  apply_params,
  augment,
  augment_and_featurize,
  augment_one,
  identity_params,
  sample_params,
)
from bilevel_jax.audio.features import (
  N_MELS,
  NUM_FRAMES,
  NUM_SAMPLES,
  SAMPLE_RATE,
  featurize,
  log_mel,
  mel_power,
  normalize_log_mel,
)

__all__ = [
  "AugmentParams",
  "apply_params",
  "augment",
  "augment_and_featurize",
  "augment_one",
  "identity_params",
  "sample_params",
  "N_MELS",
  "NUM_FRAMES",
  "NUM_SAMPLES",
  "SAMPLE_RATE",
  "featurize",
  "log_mel",
  "mel_power",
  "normalize_log_mel",
]
