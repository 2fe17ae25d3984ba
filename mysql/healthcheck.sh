#!/bin/sh
# Healthcheck of the compose testbed's DB containers: `healthcheck.sh primary|replica`.
# The server (the real one, after the bootstrap) answers SELECT 1, AND, when it has a
# source (a replica, or the old primary after a switchover), its replication IO and SQL
# threads both run.  A replica a role change promoted has no source: answering is enough.
# `-v` prints the replica's status (what `offload testbed up` shows on a timeout).
set -eu
ROLE=${1:-${OFFLOAD_ROLE:-}}
VERBOSE=${2:-}
# where the server's socket and data dir are (the container's paths by default)
SOCKET=${OFFLOAD_SOCKET:-/run/offload/mysqld.sock}
DATADIR=${OFFLOAD_DATADIR:-/var/lib/mysql}
CLIENT=$(command -v mariadb || command -v mysql)
ask() { "$CLIENT" --no-defaults --protocol=socket -S "$SOCKET" -uroot "$@"; }

[ -f "$DATADIR/.offload-bootstrapped" ] || { echo "bootstrap not finished"; exit 1; }
ask -N -e 'SELECT 1' >/dev/null

# SHOW REPLICA STATUS: MySQL 8.0.22+ (Replica_* columns), MariaDB 10.5.1+ (Slave_*);
# -E (vertical) rather than \G, which MySQL 9's client refuses in batch mode
status=$(ask -E -e 'SHOW REPLICA STATUS')
[ "$VERBOSE" = -v ] && printf '%s\n' "$status"
[ -n "$status" ] || exit 0  # no source: a primary
io=no sql=no
case "$status" in *"_IO_Running: Yes"*) io=yes ;; esac
case "$status" in *"_SQL_Running: Yes"*) sql=yes ;; esac
if [ "$io" = yes ] && [ "$sql" = yes ]; then
  exit 0
fi
echo "replication threads: IO $io, SQL $sql"
exit 1
