#!/usr/bin/env bash
# `make test-compose`: the compose suite once per server flavor, each on a stack of its own.
#   scripts/test-compose.sh FLAVOR... -- PYTEST_ARGS...
# Does its own set-up: the compose client (as root on Debian: apt-get install
# docker-compose), and — unless OFFLOAD_DB_IMAGE names a registry image — the local images
# of each flavor (`offload testbed images`: debootstrap as root, cached by the engine).
# Prints one line per flavor: the server that ran and pytest's summary.  Fails when a
# flavor's suite fails or leaves a container, network or volume behind.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
flavors=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do flavors+=("$1"); shift; done
[ $# -gt 0 ] && shift
say() { echo "test-compose: $*" >&2; }

if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing docker-compose with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends docker-compose; } >/dev/null || exit 1
  else
    say "no compose client; install one: sudo apt-get install docker-compose (or Docker's compose plugin)"
    exit 1
  fi
fi
if ! docker info >/dev/null 2>&1; then
  say "no Docker engine answers; start one (sudo dockerd, or Docker Desktop), or use make test"
  exit 1
fi

if [ -n "${OFFLOAD_DB_IMAGE:-}" ]; then
  flavors=("")  # the image decides the server: one run
else
  args=(); for f in "${flavors[@]}"; do args+=(--flavor "$f"); done
  "$BIN/offload" testbed images "${args[@]}" || exit 1
  export OFFLOAD_OFFLINE=1
fi

leftovers() {
  for kind in container network volume; do
    docker "$kind" ls -q $([ "$kind" = container ] && echo -a) \
      --filter label=com.docker.compose.project 2>/dev/null | while read -r id; do
        project=$(docker "$kind" inspect --format \
          '{{ index .Labels "com.docker.compose.project" }}' "$id" 2>/dev/null)
        case "$project" in offload-pytest*) echo "$kind $id ($project)" ;; esac
      done
  done
}

summary=() failed=0
for flavor in "${flavors[@]}"; do
  log=$(mktemp)
  started=$SECONDS
  OFFLOAD_FLAVOR=$flavor "$BIN/pytest" --testbed=compose "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  ran=$(sed -n 's/^offload testbed ran: //p' "$log" | tail -n 1)
  result=$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$log" | tail -n 1 \
           | sed -E 's/^=+ //; s/ =+$//')
  rm -f "$log"
  left=$(leftovers)
  if [ -n "$left" ]; then
    say "left behind after ${flavor:-$OFFLOAD_DB_IMAGE}:"$'\n'"$left"
    rc=1
  fi
  [ "$rc" -eq 0 ] || failed=1
  summary+=("${flavor:-${OFFLOAD_DB_IMAGE}}: ${ran:-no testbed started} — ${result:-no summary} ($((SECONDS - started))s, exit $rc)")
done
echo
for line in "${summary[@]}"; do echo "test-compose: $line"; done
exit "$failed"
