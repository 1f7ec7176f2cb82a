#!/usr/bin/env bash
# The device checks of the README's "GPUs", in one command for a lent GPU machine: the
# `gpu`-marked tests, then bench/gpu.py's speed and packing parts (about 4 minutes on one
# H100). Each output also goes to $OUT (the device tool's folder that comes back) or
# ./device-out. First, here: bash scripts/device-wheels.sh; then run this with `.whl` carried:
#   bash scripts/device-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # pydantic & co. (scripts/device-wheels.sh)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/device-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/device-site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi 2>&1 | tee "$out/nvidia-smi.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pytest -m gpu -n 0 -p no:cacheprovider -q -rs \
  tests/trainables/test_cuda.py tests/trainables/test_augment.py 2>&1 | tee "$out/gpu-tests.txt"
python3 bench/gpu.py --parts speed packing "$@" 2>&1 | tee "$out/gpu-bench.txt"
