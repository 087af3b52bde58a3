#!/bin/bash
# Run once by the postgres image on a fresh data volume (/docker-entrypoint-initdb.d): the
# service's own role (not a superuser; password from IMPORTER_PASSWORD in
# docker/secrets/stack.env) owning the app DB and the sample customers' databases, which
# docker/secrets/customer_map.json names. The service creates its tables on first use.
set -Eeuo pipefail
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --no-password --no-psqlrc --dbname postgres \
     --set pw="$IMPORTER_PASSWORD" <<'SQL'
CREATE ROLE importer LOGIN PASSWORD :'pw';
CREATE DATABASE import_app OWNER importer;
CREATE DATABASE import_acme OWNER importer;
CREATE DATABASE import_globex OWNER importer;
SQL
