#!/usr/bin/env bash
# Make sure a MariaDB or MySQL server binary is installed.  As root on
# Debian/Ubuntu it installs mariadb-server; otherwise it prints the one
# command to run and fails.
set -euo pipefail

for name in mariadbd mysqld; do
  if command -v "$name" >/dev/null 2>&1 || [ -x "/usr/sbin/$name" ]; then
    exit 0
  fi
done
if [ -n "${OFFLOAD_MYSQLD:-}" ] && [ -x "$OFFLOAD_MYSQLD" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "offload: no MySQL/MariaDB server found; installing mariadb-server with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  echo "offload: no MySQL/MariaDB server found; install one with: sudo apt-get install mariadb-server" >&2
else
  echo "offload: no MySQL/MariaDB server found; install MariaDB (mariadbd) or MySQL (mysqld) with your package manager, or set OFFLOAD_MYSQLD=/path/to/mysqld" >&2
fi
exit 1
