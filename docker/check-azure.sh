#!/usr/bin/env bash
# docker/check-azure.sh: the compose file's optional `azure` profile, for real. Builds the
# service's image and Azurite's (docker/azurite/), brings the stack up with Azurite on its
# network, puts a CSV into Azurite and imports it through REST (an az:// URI in globex's area),
# imports a generated 200,000-row CSV with `importctl enqueue --file` (uploaded into the area
# first), checks that a URI outside globex's area and a customer without an Azure area are
# refused, that no log line shows the account key, then tears everything down (also on failure).
# Needs a Docker engine and docker-compose (on our machines: ../shared/tools/docker-stand-ins.sh).
# Prints what it measured. `make docker-check` does not run it: it builds a second image.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
say() { printf 'check-azure [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }

command -v docker-compose >/dev/null || fail "docker-compose is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (on our machines: ../shared/tools/docker-stand-ins.sh)"
cmp -s package.json docker/azurite/package.json && cmp -s package-lock.json docker/azurite/package-lock.json \
  || fail "docker/azurite/package.json or package-lock.json differs from the repo's: cp package.json package-lock.json docker/azurite/"

export COMPOSE_PROJECT_NAME=importazure
WORK=$(mktemp -d /tmp/import-docker-azure.XXXXXX)
export SECRETS=$WORK/secrets
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REST_PORT=$(free_port) && GRPC_PORT=$(free_port) && export REST_PORT GRPC_PORT
compose() { docker-compose --profile azure -f docker-compose.yml "$@"; }
teardown() {
  code=$?
  if [ "$code" -ne 0 ]; then
    compose logs --tail=40 >"$WORK/stack.log" 2>&1 || true
    say "the stack's last log lines: $WORK/stack.log"
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  say "torn down"
  exit "$code"
}
trap teardown EXIT

# -- the images -----------------------------------------------------------------------------
base=python:3.11-slim
digest=$(docker image inspect --format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{end}}' "$base" 2>/dev/null || true)
if [ -n "$digest" ]; then base=$digest; fi
say "building the service's image on $base"
docker build -q --build-arg PYTHON_IMAGE="$base" -t import-service:latest . >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log"; fail "building the service's image"; }
say "building Azurite's image (docker/azurite/) on $base"
t=$SECONDS
docker build -q --build-arg BASE_IMAGE="$base" -t import-azurite:3.35.0 docker/azurite >"$WORK/azurite-build.log" 2>&1 \
  || { cat "$WORK/azurite-build.log"; fail "building docker/azurite"; }
size=$(docker image inspect --format '{{.Size}}' import-azurite:3.35.0)
versions=$(docker run --rm --entrypoint sh import-azurite:3.35.0 -c 'echo "node $(node --version), azurite $(azurite-blob --version)"')
say "image import-azurite:3.35.0: $((size / 1000000)) MB, $versions, built in $((SECONDS - t)) s (cached layers count)"

# -- up -------------------------------------------------------------------------------------
docker/make-secrets.sh >/dev/null  # fresh ones, in $SECRETS: globex's area is on the azurite service
TOKEN=$(python3 -c 'import json, os; print(next(iter(json.load(open(os.environ["SECRETS"] + "/api_tokens.json")))))')
KEY=$(sed -n 's/^AZURE_STORAGE_CONNECTION_STRING=.*AccountKey=\([^;]*\);.*/\1/p' "$SECRETS/stack.env")
[ -n "$KEY" ] || fail "make-secrets.sh wrote no AZURE_STORAGE_CONNECTION_STRING with an AccountKey"
say "starting the stack with the azure profile (REST on 127.0.0.1:$REST_PORT)"
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "docker-compose up"; }
healthy() {  # every container of the stack but migrate reports healthy
  local states
  states=$(compose ps -q | xargs docker inspect --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' \
           | grep -v migrate | awk '{print $2}' | sort -u | tr '\n' ' ')
  [ "$states" = "healthy " ]
}
for _ in $(seq 120); do healthy && break; sleep 1; done
healthy || { compose ps; fail "the stack is not healthy after 120 s"; }
say "stack healthy: $(compose ps -q | wc -l) containers, azurite among them"

# -- a CSV put into Azurite, imported through REST -------------------------------------------
REST=http://127.0.0.1:$REST_PORT
compose exec -T rest python - <<'PY' || fail "putting the sample into Azurite"
import os
from azure.storage.blob import BlobServiceClient

service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
service.create_container("imports")
with open("/blobs/globex/users.csv", "rb") as data:
    service.get_blob_client("imports", "customers/globex/users.csv").upload_blob(data)
PY
enqueue() {  # customer uri -> HTTP status, and the answer in $WORK/answer.json
  curl -s -o "$WORK/answer.json" -w '%{http_code}' -X POST "$REST/enqueue" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"customer_id\": \"$1\", \"product_type\": \"users\", \"blob_uri\": \"$2\", \"options\": {\"mode\": \"upsert\"}}"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
uri=az://imports/customers/globex/users.csv
[ "$(enqueue globex "$uri")" = 202 ] || fail "enqueue $uri: $(cat "$WORK/answer.json")"
job=$(field job_id <"$WORK/answer.json")
for _ in $(seq 120); do
  view=$(curl -sf "$REST/jobs/$job" -H "Authorization: Bearer $TOKEN")
  case $(echo "$view" | field status) in succeeded|failed|cancelled) break ;; esac
  sleep 1
done
[ "$(echo "$view" | field status)" = succeeded ] || fail "REST import of $uri: $view"
say "REST      $uri -> succeeded, $(echo "$view" | field rows_valid) valid, $(echo "$view" | field rows_invalid) invalid"

# -- importctl enqueue --file: uploaded into globex's area, then imported -----------------------
t=$SECONDS
line=$(compose exec -T worker sh -c '
  python -c "
import sys
sys.stdout.write(\"external_id,email,first_name,last_name,role,age\n\")
for i in range(200_000):
    sys.stdout.write(f\"az{i},az{i}@example.com,Ada,Lovelace,student,{18 + i % 60}\n\")
" >/tmp/azure-users.csv && importctl enqueue --customer=globex --product=users --file=/tmp/azure-users.csv --wait' 2>&1) \
  || fail "importctl enqueue --file for globex: $line"
job=$(echo "$line" | grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' | head -1)
[ -n "$job" ] || fail "no job id in importctl's answer: $line"
view=$(curl -sf "$REST/jobs/$job" -H "Authorization: Bearer $TOKEN")
[ "$(echo "$view" | field status)" = succeeded ] || fail "the uploaded file's job: $view"
blob_uri=$(echo "$view" | field blob_uri)
case $blob_uri in az://imports/customers/globex/uploads/*) ;; *) fail "the upload went to $blob_uri, not globex's Azure area" ;; esac
rows=$(compose exec -T db psql -U postgres -d import_globex -Atc "SELECT count(*) FROM users WHERE job_id = '$job'")
[ "$rows" = 200000 ] || fail "expected 200000 rows from $blob_uri, found $rows: $view"
chunks=$(echo "$view" | python3 -c 'import json, sys; print(json.load(sys.stdin)["progress"]["chunks_total"])')
say "importctl --file 200,000 rows -> $blob_uri: succeeded, $rows rows in import_globex, $chunks chunks, $((SECONDS - t)) s with the upload"

# -- refusals and credentials ---------------------------------------------------------------
code=$(enqueue globex az://imports/customers/acme/users.csv)
[ "$code" = 400 ] || fail "a URI under acme's prefix for globex answered $code, not 400: $(cat "$WORK/answer.json")"
say "REST      az://imports/customers/acme/... for globex -> 400"
code=$(enqueue acme az://imports/customers/acme/users.csv)
[ "$code" = 400 ] || fail "an az:// URI for acme (no Azure area) answered $code, not 400: $(cat "$WORK/answer.json")"
say "REST      az://... for acme (no Azure area) -> 400"
compose logs --no-color >"$WORK/all.log" 2>&1
if grep -qF "$KEY" "$WORK/all.log"; then fail "the account key shows in the stack's logs ($WORK/all.log)"; fi
say "the account key shows in none of the stack's $(wc -l <"$WORK/all.log") log lines"
memory=$(docker stats --no-stream --format '{{.MemUsage}}' "$(compose ps -q azurite)" | cut -d/ -f1)
say "azurite container memory after the imports: $memory"
say "passed in $((SECONDS - T0)) s"
