#!/usr/bin/env bash
# Run here, before lending a GPU machine the device checks (scripts/device-check.sh): downloads
# into .whl/ the Python 3.12 wheels that machine lacks for them. Its python3 holds a CUDA torch,
# numpy and pytest, but not pydantic, and nothing can be fetched there; the versions are this
# checkout's venv's. .whl/ is kept out of git through .git/info/exclude; name it in the run's
# `carry`. (Ray, MLflow and Optuna are not carried: Ray's wheel alone is 79 MB, over what a
# run may carry, so bench/gpu.py's sweep part is skipped there.)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PY:-.venv/bin/python}
pins=()
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
  pins+=("$name==$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")")
done
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
ls -l .whl
