"""Datasets (FSDD, Speech Commands V2), decoding to 1 s / 16 kHz, waveform cache, noise."""

from bilevel_jax.data.core import AudioDataset, Split
from bilevel_jax.data.datasets import DATASETS, load_dataset
from bilevel_jax.data.decode import BadAudioError, load_clip, probe
from bilevel_jax.data.noise import generated_noise, load_background_noise

__all__ = [
  "AudioDataset",
  "Split",
  "DATASETS",
  "load_dataset",
  "BadAudioError",
  "load_clip",
  "probe",
  "generated_noise",
  "load_background_noise",
]
