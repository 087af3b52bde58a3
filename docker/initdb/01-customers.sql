-- Run once by the postgres image on a fresh data volume (/docker-entrypoint-initdb.d).
-- The app DB (import_app) is created from POSTGRES_DB; these are the sample customers' databases,
-- named in docker/customer_map.docker.json. The service creates the product tables on first import.
CREATE DATABASE import_acme;
CREATE DATABASE import_globex;
