#!/usr/bin/env bash
# Installs hpsearch and its dev tools into the venv VENV (default .venv), editable.
#
# torch's CUDA wheels are about 3.8 GB; pip unpacks them one at a time (about 4.5 minutes on
# this 2-core machine, 2026-12-03). uv unpacks them in parallel and links from its cache on a
# second install, so it is used when it installs; pip's own settings (find-links, extra index
# URLs, constraints, CA bundle) are handed to it. Any failure of uv falls back to plain pip.
set -euo pipefail
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
test -x "$PY" || python3 -m venv "$VENV"

pip_get() { "$PY" -m pip config get "$1" 2>/dev/null || true; }

with_uv() {
  "$PY" -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 || return 1
  local args=(--python "$PY" --index-strategy unsafe-best-match)
  local links=${PIP_FIND_LINKS:-$(pip_get global.find-links)}
  for l in $links; do args+=(--find-links "$l"); done
  for u in ${PIP_EXTRA_INDEX_URL:-$(pip_get global.extra-index-url)}; do
    args+=(--extra-index-url "$u")
  done
  local index=${PIP_INDEX_URL:-$(pip_get global.index-url)}
  [ -n "$index" ] && args+=(--default-index "$index")
  local constraint=${PIP_CONSTRAINT:-$(pip_get global.constraint)}
  for c in $constraint; do args+=(--constraint "$c"); done
  local cert=${PIP_CERT:-$(pip_get global.cert)}
  [ -n "$cert" ] && export SSL_CERT_FILE="$cert"
  # --compile-bytecode: uv writes no .pyc by default (pip does), and where PYTHONDONTWRITEBYTECODE
  # is set (this CI) Python then recompiles torch, Ray and MLflow from source in every process:
  # 6 s an import instead of 2, a 2-trial sweep 62 s instead of 37 (measured 2026-12-03)
  "$VENV/bin/uv" pip install -q --compile-bytecode "${args[@]}" -e ".[dev]"
}

if ! with_uv; then
  echo "uv did not install; installing with pip" >&2
  "$PY" -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 \
    | { grep -v '^WARNING: Location' || true; }
fi
