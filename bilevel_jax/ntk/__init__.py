"""Infinite-width WRN kernels (NNGP/NTK), streamed in tiles; Nystrom features; landmark-kernel cache.

Modules: wrn_kernel (the kernel of one tile / one shot), kernel_matrix (streaming over tiles),
nystrom, cache (resumable k(X, U) on disk), features (landmarks -> k(X, U) -> Nystrom features
and augmented-copy banks, from a config block). Test inputs: bilevel_jax.testing.
"""
