"""Semi-supervised (MixMatch) and supervised training of the classifier from raw waveforms.

Entry points: `bilevel_jax.ssl.train.{train, train_many}`, `bilevel_jax.ssl.evaluate.{predict,
evaluate}`, pure losses in `bilevel_jax.ssl.mixmatch`.
"""
