# Sourced by the device scripts: packages the device image lacks, data and cache paths.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target .devsite .whl/*.whl || { echo "wheel install failed (see scripts/gpu/README.md)"; exit 1; }
export PYTHONPATH=$PWD/.devsite:$PWD BILEVEL_JAX_DATA=$PWD/.devdata BILEVEL_JAX_CACHE=$PWD/runs/cache
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
