-- Run once on a new primary, by root. It reaches the replicas through the
-- binary log, so they end up with the same database and users.
-- Dollar-brace placeholders are filled in by the testbed (native or compose).
CREATE DATABASE IF NOT EXISTS nova CHARACTER SET utf8mb4;
-- the service's account: data and schema of its own database, nothing else
CREATE USER 'nova'@'%' IDENTIFIED BY '${NOVA_PASSWORD}';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES
  ON nova.* TO 'nova'@'%';
-- the account named in slave_connection: SELECT only
CREATE USER 'nova_ro'@'%' IDENTIFIED BY '${NOVA_RO_PASSWORD}';
GRANT SELECT ON nova.* TO 'nova_ro'@'%';
-- the replicas' account for pulling the binary log
CREATE USER 'repl'@'%' IDENTIFIED BY '${REPL_PASSWORD}';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
-- the testbed's own account: status, test databases, fault injection
CREATE USER 'offload_admin'@'%' IDENTIFIED BY '${ADMIN_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO 'offload_admin'@'%' WITH GRANT OPTION;
