-- Run once on a new MySQL replica, by root: replicate from the primary by GTID.
CHANGE REPLICATION SOURCE TO
  SOURCE_HOST = '${PRIMARY_HOST}',
  SOURCE_PORT = ${PRIMARY_PORT},
  SOURCE_USER = 'repl',
  SOURCE_PASSWORD = '${REPL_PASSWORD}',
  SOURCE_CONNECT_RETRY = 1,
  -- a heartbeat every second: the primary's dump thread notices a stopped replica at
  -- once (default 30 s, which held a primary's shutdown for 9-12 s)
  SOURCE_HEARTBEAT_PERIOD = 1,
  SOURCE_AUTO_POSITION = 1,
  -- TLS with the primary's certificate verified against the testbed's CA (TLS_ON 1);
  -- TLS_ON 0 (`--tls off`): plain TCP, for comparison
  SOURCE_SSL = ${TLS_ON},
  SOURCE_SSL_CA = '${TLS_CA}',
  SOURCE_SSL_VERIFY_SERVER_CERT = ${TLS_ON},
  GET_SOURCE_PUBLIC_KEY = 1;
START REPLICA;
