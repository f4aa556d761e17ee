#!/usr/bin/env bash
# Sluice's application role and database, on a new PostgreSQL cluster.
#
# The app, its migrations, PgBouncer and the exporters connect as this role:
# it owns its database (so migrations can create tables) and may read the
# statistics views (pg_monitor), but it is not a superuser. The superuser's
# password stays with the operators.
#
# Runs once per cluster, from the same file in every deployment shape: the
# postgres image's entrypoint executes it from /docker-entrypoint-initdb.d on
# an empty volume (compose, Kubernetes), and the local launcher runs it after
# initdb. Safe to run again: what exists is left alone.
#
# Reads SLUICE_DB_USER, SLUICE_DB_PASSWORD, SLUICE_DB_NAME; connects as
# POSTGRES_USER (default postgres) with libpq's usual PG* variables.
set -euo pipefail

: "${SLUICE_DB_USER:?}" "${SLUICE_DB_PASSWORD:?}" "${SLUICE_DB_NAME:?}"

psql --no-psqlrc -v ON_ERROR_STOP=1 --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    --set app_user="$SLUICE_DB_USER" \
    --set app_password="$SLUICE_DB_PASSWORD" \
    --set app_db="$SLUICE_DB_NAME" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'app_db') \gexec
GRANT pg_monitor TO :"app_user";
SQL
