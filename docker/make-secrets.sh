#!/usr/bin/env bash
# docker/make-secrets.sh: the stack's secrets in docker/secrets/ (git-ignored), made once with
# random passwords and a random API token; existing files are kept. docker-compose.yml reads
# them; nothing secret is in the image or in git.
#
#   stack.env          POSTGRES_PASSWORD (superuser), IMPORTER_PASSWORD (the service's role), APP_DB_DSN,
#                      keys for the optional s3 and azurite services
#   customer_map.json  the sample customers' DSNs, as the service's role; acme's S3 area (on the s3
#                      service), globex's Azure area (on the azurite service)
#   api_tokens.json    one token for every customer (printed once, when made)
set -Eeuo pipefail
# SECRETS: the folder (default docker/secrets; make docker-check uses a fresh one of its own).
SECRETS=${SECRETS:-$(cd "$(dirname "$0")" && pwd)/secrets}
mkdir -p "$SECRETS" && chmod 700 "$SECRETS"
cd "$SECRETS"
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
# Read by the containers' own users through bind mounts: the files are 0644, the folder 0700.
umask 022
if [ ! -s stack.env ]; then
  importer=$(random)
  # The AWS keys are for the optional s3 service (moto accepts any); for real S3 put yours here.
  # The Azure connection string is for the optional azurite service: Azurite's well-known
  # development account and key (public, in Azurite's docs); for real Azure put yours here.
  cat > stack.env <<ENV
POSTGRES_PASSWORD=$(random)
IMPORTER_PASSWORD=$importer
APP_DB_DSN=postgresql://importer:$importer@db:5432/import_app
AWS_ACCESS_KEY_ID=stack-$(random)
AWS_SECRET_ACCESS_KEY=$(random)
AWS_DEFAULT_REGION=us-east-1
AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://azurite:10000/devstoreaccount1;
ENV
  cat > customer_map.json <<JSON
{
  "acme": {
    "dsn": "postgresql://importer:$importer@db:5432/import_acme",
    "s3": {"bucket": "imports", "prefix": "customers", "endpoint_url": "http://s3:5000", "region": "us-east-1"}
  },
  "globex": {
    "dsn": "postgresql://importer:$importer@db:5432/import_globex",
    "azure": {"account_url": "http://azurite:10000/devstoreaccount1", "container": "imports", "prefix": "customers"}
  }
}
JSON
  echo "made $SECRETS/stack.env and $SECRETS/customer_map.json"
fi
if [ ! -s api_tokens.json ]; then
  token=$(random)
  printf '{"%s": ["*"]}\n' "$token" > api_tokens.json
  echo "made $SECRETS/api_tokens.json; the API token for every customer: $token"
fi
