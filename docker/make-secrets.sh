#!/usr/bin/env bash
# docker/make-secrets.sh: the stack's secrets in docker/secrets/ (git-ignored), made once with
# random passwords and a random API token; existing files are kept. docker-compose.yml reads
# them; nothing secret is in the image or in git.
#
#   stack.env          POSTGRES_PASSWORD (superuser), IMPORTER_PASSWORD (the service's role), APP_DB_DSN
#   customer_map.json  the sample customers' DSNs, as the service's role
#   api_tokens.json    one token for every customer (printed once, when made)
set -Eeuo pipefail
cd "$(dirname "$0")"
mkdir -p secrets && chmod 700 secrets
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
# Read by the containers' own users through bind mounts: the files are 0644, the folder 0700.
umask 022
if [ ! -s secrets/stack.env ]; then
  importer=$(random)
  cat > secrets/stack.env <<ENV
POSTGRES_PASSWORD=$(random)
IMPORTER_PASSWORD=$importer
APP_DB_DSN=postgresql://importer:$importer@db:5432/import_app
ENV
  cat > secrets/customer_map.json <<JSON
{
  "acme": "postgresql://importer:$importer@db:5432/import_acme",
  "globex": "postgresql://importer:$importer@db:5432/import_globex"
}
JSON
  echo "made docker/secrets/stack.env and docker/secrets/customer_map.json"
fi
if [ ! -s secrets/api_tokens.json ]; then
  token=$(random)
  printf '{"%s": ["*"]}\n' "$token" > secrets/api_tokens.json
  echo "made docker/secrets/api_tokens.json; the API token for every customer: $token"
fi
