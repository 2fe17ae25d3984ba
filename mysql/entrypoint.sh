#!/bin/sh
# Entrypoint of the compose testbed's DB containers: `entrypoint.sh primary|replica`.
#
# Works on the official mysql:8.4 and mariadb:11.4 images and on the local
# offload-mariadb image (Debian's MariaDB).  It uses the SAME files as the
# native backend, mounted read-only at /etc/offload/mysql:
#   conf/common.cnf + conf/<flavor>.cnf + conf/<role>.cnf   (!included)
#   bootstrap/primary.sql | bootstrap/replica-<flavor>.sql  (${NAME} filled from env)
# On a new data dir it initialises it, runs the bootstrap on a private server
# (no TCP, its own socket), stops that server, then runs the real one in the
# foreground (exec: it is PID 1 and gets docker's SIGTERM).
#
# Environment: SERVER_ID; primary: NOVA_PASSWORD NOVA_RO_PASSWORD REPL_PASSWORD
# ADMIN_PASSWORD; replica: PRIMARY_HOST PRIMARY_PORT REPL_PASSWORD.  TLS_ON (default 0,
# plain TCP): 1 copies the testbed's TLS files (mounted read-only at /etc/offload/tls,
# 0600 on the host) to /run/offload/tls owned by the mysql user and includes their
# server.cnf (the certificate, require_secure_transport = ON); a replica's channel then
# runs over TLS verified against TLS_CA (the CA as the container sees it).
set -eu

ROLE=${1:-${OFFLOAD_ROLE:-}}
case "$ROLE" in
  primary|replica|render) ;;
  *) echo "usage: entrypoint.sh primary|replica (or: render TEMPLATE)" >&2; exit 2 ;;
esac
HERE=/etc/offload/mysql
DATADIR=/var/lib/mysql
RUNDIR=/run/offload
CNF=$RUNDIR/my.cnf
SOCKET=$RUNDIR/mysqld.sock
MARKER=$DATADIR/.offload-bootstrapped

say() { echo "offload-entrypoint[$ROLE]: $*" >&2; }

# --- ${NAME} placeholders, filled from the environment (no sed, no envsubst) --
fill() {  # fill TEMPLATE: print it with every known ${NAME} replaced
  while IFS= read -r line || [ -n "$line" ]; do
    for name in NOVA_PASSWORD NOVA_RO_PASSWORD REPL_PASSWORD ADMIN_PASSWORD \
                PRIMARY_HOST PRIMARY_PORT TLS_ON TLS_CA; do
      while :; do
        case "$line" in
          *"\${$name}"*)
            case "$name" in
              TLS_ON) value=${TLS_ON:-0} ;;
              TLS_CA) value=${TLS_CA:-} ;;
              *) eval "value=\${$name:?$name is not set}" ;;
            esac
            case "$value" in
              *"'"*|*\\*) say "$name must not contain a quote or a backslash"; exit 1 ;;
            esac
            line="${line%%"\${$name}"*}$value${line#*"\${$name}"}" ;;
          *) break ;;
        esac
      done
    done
    case "$line" in
      *'${'*) say "$1 has a placeholder this script does not know: $line"; exit 1 ;;
    esac
    printf '%s\n' "$line"
  done < "$1"
}

# `entrypoint.sh render TEMPLATE`: print the filled template (the tests compare it
# with what the native backend sends); touches nothing
if [ "$ROLE" = render ]; then
  fill "${2:?render needs a template}"
  exit 0
fi

# --- which server: MariaDB or MySQL ------------------------------------------
if command -v mariadbd >/dev/null 2>&1; then
  FLAVOR=mariadb SERVER=$(command -v mariadbd)
elif command -v mysqld >/dev/null 2>&1; then
  SERVER=$(command -v mysqld)
  case "$("$SERVER" --version)" in *MariaDB*) FLAVOR=mariadb ;; *) FLAVOR=mysql ;; esac
else
  say "no mariadbd or mysqld in this image"; exit 1
fi
CLIENT=$(command -v mariadb || command -v mysql || true)
[ -n "$CLIENT" ] || { say "no mariadb/mysql client in this image"; exit 1; }

# --- the generated config: the shared files + this instance ------------------
mkdir -p "$RUNDIR"
chown mysql:mysql "$RUNDIR"
cat > "$CNF" <<EOF
!include $HERE/conf/common.cnf
!include $HERE/conf/$FLAVOR.cnf
!include $HERE/conf/$ROLE.cnf

[mysqld]
server_id     = ${SERVER_ID:?SERVER_ID is not set}
port          = 3306
bind_address  = 0.0.0.0
datadir       = $DATADIR
socket        = $SOCKET
pid_file      = $RUNDIR/mysqld.pid
user          = mysql
EOF
chmod 0644 "$CNF"

# --- TLS: the testbed's files, for the mysql user (server.cnf names them there) ---
if [ "${TLS_ON:-0}" = 1 ]; then
  TLS_FROM=/etc/offload/tls TLS_HOME=$RUNDIR/tls
  mkdir -p "$TLS_HOME"
  for file in ca.pem server-cert.pem server-key.pem server.cnf; do
    [ -f "$TLS_FROM/$file" ] || { say "TLS_ON=1 but $TLS_FROM/$file is missing"; exit 1; }
    cp "$TLS_FROM/$file" "$TLS_HOME/$file"
    chmod 0600 "$TLS_HOME/$file"
  done
  chown -R mysql:mysql "$TLS_HOME"
  chmod 0700 "$TLS_HOME"
  echo "!include $TLS_HOME/server.cnf" >> "$CNF"
fi

# --- a new data dir: initialise and bootstrap ---------------------------------
if [ ! -f "$MARKER" ]; then
  # a data dir without the marker is a bootstrap that did not finish: start afresh
  # (no `find`: the mysql image may lack it)
  rm -rf "${DATADIR:?}"/* "$DATADIR"/.[!.]* "$DATADIR"/..?* 2>/dev/null || true
  chown mysql:mysql "$DATADIR"
  say "initialising $DATADIR ($FLAVOR)"
  if [ "$FLAVOR" = mariadb ]; then
    INSTALL=$(command -v mariadb-install-db || command -v mysql_install_db)
    "$INSTALL" --no-defaults --datadir="$DATADIR" --user=mysql \
      --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve >/dev/null
  else
    "$SERVER" --no-defaults --initialize-insecure --datadir="$DATADIR" --user=mysql
  fi
  BOOT_SOCKET=$RUNDIR/bootstrap.sock
  "$SERVER" --defaults-file="$CNF" --skip-networking --socket="$BOOT_SOCKET" &
  boot_pid=$!
  tries=0
  until "$CLIENT" --no-defaults --protocol=socket -S "$BOOT_SOCKET" -uroot \
        -e 'SELECT 1' >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 240 ] || ! kill -0 "$boot_pid" 2>/dev/null; then
      say "the bootstrap server did not start"; exit 1
    fi
    sleep 0.5
  done
  if [ "$ROLE" = primary ]; then
    script=$HERE/bootstrap/primary.sql
  else
    script=$HERE/bootstrap/replica-$FLAVOR.sql
  fi
  say "running $script"
  (umask 077 && fill "$script" > "$RUNDIR/bootstrap.sql")
  "$CLIENT" --no-defaults --protocol=socket -S "$BOOT_SOCKET" -uroot < "$RUNDIR/bootstrap.sql"
  rm -f "$RUNDIR/bootstrap.sql"
  "$CLIENT" --no-defaults --protocol=socket -S "$BOOT_SOCKET" -uroot -e 'SHUTDOWN'
  wait "$boot_pid" || true
  echo "$ROLE $FLAVOR" > "$MARKER"
  say "bootstrap done"
fi

say "starting $SERVER ($FLAVOR, server_id $SERVER_ID)"
exec "$SERVER" --defaults-file="$CNF"
