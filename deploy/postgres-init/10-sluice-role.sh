#!/usr/bin/env bash
# Sluice's roles and database, on a new PostgreSQL cluster.
#
# The app, its migrations and PgBouncer connect as the application role: it
# owns its database (so migrations can create tables) but is not a superuser.
# The PostgreSQL exporter connects as a monitoring role of its own: a member
# of pg_monitor (the statistics views), owning nothing and allowed few
# connections, so a leaked exporter password reads statistics and nothing
# else. The superuser's password stays with the operators.
#
# Runs once per cluster, from the same file in every deployment shape: the
# postgres image's entrypoint executes it from /docker-entrypoint-initdb.d on
# an empty volume (compose, Kubernetes), and the local launcher runs it after
# initdb. Safe to run again: what exists is left alone, except that the app
# role loses pg_monitor (earlier versions granted it; the exporter has its own).
#
# Reads SLUICE_DB_USER, SLUICE_DB_PASSWORD, SLUICE_DB_NAME,
# POSTGRES_MONITOR_USER, POSTGRES_MONITOR_PASSWORD; connects as POSTGRES_USER
# (default postgres) with libpq's usual PG* variables.
set -euo pipefail

: "${SLUICE_DB_USER:?}" "${SLUICE_DB_PASSWORD:?}" "${SLUICE_DB_NAME:?}"
: "${POSTGRES_MONITOR_USER:?}" "${POSTGRES_MONITOR_PASSWORD:?}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set app_user="$SLUICE_DB_USER" \
    --set app_password="$SLUICE_DB_PASSWORD" \
    --set app_db="$SLUICE_DB_NAME" \
    --set monitor_user="$POSTGRES_MONITOR_USER" \
    --set monitor_password="$POSTGRES_MONITOR_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') \gexec
-- postgres_exporter holds one connection; the limit bounds what it can take
-- from the reserve above PgBouncer's pool (POSTGRES_MAX_CONNECTIONS).
SELECT format('CREATE ROLE %I LOGIN CONNECTION LIMIT 3 PASSWORD %L',
              :'monitor_user', :'monitor_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'monitor_user') \gexec
GRANT pg_monitor TO :"monitor_user";
SELECT format('REVOKE pg_monitor FROM %I', :'app_user')
WHERE pg_has_role(:'app_user', 'pg_monitor', 'MEMBER') \gexec
SQL
