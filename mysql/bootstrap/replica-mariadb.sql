-- Run once on a new MariaDB replica, by root: replicate from the primary by GTID.
CHANGE MASTER TO
  MASTER_HOST = '${PRIMARY_HOST}',
  MASTER_PORT = ${PRIMARY_PORT},
  MASTER_USER = 'repl',
  MASTER_PASSWORD = '${REPL_PASSWORD}',
  MASTER_CONNECT_RETRY = 1,
  -- a heartbeat every second: the primary's dump thread notices a stopped replica at once
  MASTER_HEARTBEAT_PERIOD = 1,
  -- TLS with the primary's certificate verified against the testbed's CA (TLS_ON 1);
  -- TLS_ON 0 (`--tls off`): plain TCP, for comparison
  MASTER_SSL = ${TLS_ON},
  MASTER_SSL_CA = '${TLS_CA}',
  MASTER_SSL_VERIFY_SERVER_CERT = ${TLS_ON},
  MASTER_USE_GTID = slave_pos;
START SLAVE;
