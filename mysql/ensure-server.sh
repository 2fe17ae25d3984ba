#!/usr/bin/env bash
# Make sure a server of the asked flavor is at hand: `ensure-server.sh [FLAVOR]`.
#
# No flavor, mariadb, mariadb-10.11: the host's own server.  As root on Debian/Ubuntu it
# installs mariadb-server when none is there; otherwise it prints the one command to run.
# Any other flavor (mysql, mysql-9.7, mariadb-11.8): a host server of that flavor, else the
# one offload provides from a newer Debian suite (`offload testbed server`: a debootstrapped
# tree in the cache, built once as root; debootstrap is installed when missing).  The host's
# apt sources are never changed and no host package is upgraded.
# $OFFLOAD names the offload command (the Makefile passes the venv's).
set -euo pipefail
FLAVOR=${1:-${FLAVOR:-}}
OFFLOAD=${OFFLOAD:-offload}
export DEBIAN_FRONTEND=noninteractive

am_root_on_debian() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

case "$FLAVOR" in
  ""|mariadb|mariadb-10.11) ;;
  *)
    if "$OFFLOAD" testbed server --flavor "$FLAVOR" 2>/dev/null; then exit 0; fi
    if am_root_on_debian && ! command -v debootstrap >/dev/null 2>&1 \
        && [ ! -x /usr/sbin/debootstrap ]; then
      echo "offload: installing debootstrap with apt-get (to provide $FLAVOR)" >&2
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    exec "$OFFLOAD" testbed server --flavor "$FLAVOR"
    ;;
esac

for name in mariadbd mysqld; do
  if command -v "$name" >/dev/null 2>&1 || [ -x "/usr/sbin/$name" ]; then
    exit 0
  fi
done
if [ -n "${OFFLOAD_MYSQLD:-}" ] && [ -x "$OFFLOAD_MYSQLD" ]; then
  exit 0
fi

if am_root_on_debian; then
  echo "offload: no MySQL/MariaDB server found; installing mariadb-server with apt-get" >&2
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
