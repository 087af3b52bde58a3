#!/usr/bin/env bash
# make docker-check: build the image, bring the compose stack up, import every sample through
# REST, gRPC and importctl inside the stack, scale the workers to 10, check /readyz, SIGTERM
# worker containers in the middle of a big job and see it finish with every row exactly once,
# then tear everything down (also on failure). Needs a Docker engine and docker-compose (on
# our machines: ../shared/tools/docker-stand-ins.sh). Prints what it measured.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
say() { printf 'docker-check [%4ss] %s\n' "$((SECONDS - T0))" "$*"; }
fail() { say "FAILED: $*"; exit 1; }

command -v docker-compose >/dev/null || fail "docker-compose is not installed"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (on our machines: ../shared/tools/docker-stand-ins.sh)"

export COMPOSE_PROJECT_NAME=importcheck
WORK=$(mktemp -d /tmp/import-docker-check.XXXXXX)
export BLOBS=$WORK/blobs SECRETS=$WORK/secrets
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REST_PORT=$(free_port) && GRPC_PORT=$(free_port) && export REST_PORT GRPC_PORT
compose() { docker-compose --profile s3 -f docker-compose.yml -f docker/check.compose.yml "$@"; }
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

# -- the image ------------------------------------------------------------------------------
base=python:3.11-slim
digest=$(docker image inspect --format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{end}}' "$base" 2>/dev/null || true)
if [ -n "$digest" ]; then base=$digest; fi
say "building the image on $base"
docker build -q --build-arg PYTHON_IMAGE="$base" -t import-service:latest . >/dev/null
size=$(docker image inspect --format '{{.Size}}' import-service:latest)
packages=$(docker run --rm --entrypoint du import-service:latest -sm /opt/import-service | cut -f1)
say "image import-service:latest: $((size / 1000000)) MB, Python packages ${packages} MiB"
docker run --rm --entrypoint sh import-service:latest -c \
  'test "$(id -u)" != 0 && test -w "$HOME" && ! ls /app/tests /app/sample /app/api_tokens.json /app/bench 2>/dev/null && ! command -v pytest' \
  || fail "the image runs as root, has no writable HOME, or carries tests, samples, tokens or dev tools"
say "image: non-root, writable HOME, no tests/samples/tokens/dev tools"

# -- secrets and blobs ----------------------------------------------------------------------
docker/make-secrets.sh >/dev/null  # fresh ones, in $SECRETS
TOKEN=$(python3 -c 'import json, os; print(next(iter(json.load(open(os.environ["SECRETS"] + "/api_tokens.json")))))')
mkdir -p "$BLOBS" && cp -r sample/acme sample/globex "$BLOBS"/
python3 - "$BLOBS/acme/big.csv" <<'PY'
import sys
with open(sys.argv[1], "w") as out:
    out.write("external_id,email,first_name,last_name,role,age\n")
    for i in range(1_000_000):
        email = "not-an-email" if i % 1000 == 0 else f"big{i}@example.com"
        out.write(f"big{i},{email},Ada,Lovelace,student,{18 + i % 60}\n")
PY
chmod -R a+rX "$WORK"

# -- up -------------------------------------------------------------------------------------
say "starting the stack (REST on 127.0.0.1:$REST_PORT, gRPC on 127.0.0.1:$GRPC_PORT)"
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "docker-compose up"; }
REST=http://127.0.0.1:$REST_PORT
healthy() {  # every container of the stack but migrate reports healthy
  local ids states
  ids=$(compose ps -q | xargs docker inspect --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' | grep -v migrate)
  states=$(echo "$ids" | awk '{print $2}' | sort -u | tr '\n' ' ')
  [ "$states" = "healthy " ]
}
wait_healthy() {
  for _ in $(seq 120); do healthy && return 0; sleep 1; done
  compose ps; fail "the stack is not healthy after 120 s"
}
wait_healthy
say "stack healthy: $(compose ps -q | wc -l) containers"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$REST/readyz")" = 200 ] || fail "/readyz"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$REST/jobs")" = 401 ] || fail "GET /jobs without a token must be 401"

# -- every sample through REST, gRPC and importctl -----------------------------------------
SAMPLES="acme/users.csv:users acme/users-xlsx.xlsx:users acme/courses.kv:courses globex/organizations.tsv:organizations globex/users.csv:users"
rest_job() {  # customer product path-or-uri [options json] -> job id
  local uri=$3
  case $uri in s3://*) ;; *) uri=file:///blobs/$uri ;; esac
  curl -sf -X POST "$REST/enqueue" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d "{\"customer_id\": \"$1\", \"product_type\": \"$2\", \"blob_uri\": \"$uri\", \"options\": ${4:-{\}}}" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["job_id"])'
}
rest_wait() {  # job id [seconds] -> the job view once final
  for _ in $(seq "${2:-120}"); do
    view=$(curl -sf "$REST/jobs/$1" -H "Authorization: Bearer $TOKEN")
    case $(echo "$view" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])') in
      succeeded|failed|cancelled|undone) echo "$view"; return 0 ;;
    esac
    sleep 1
  done
  fail "job $1 did not finish"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
for sample in $SAMPLES; do
  path=${sample%%:*}; product=${sample##*:}; customer=${path%%/*}
  view=$(rest_wait "$(rest_job "$customer" "$product" "$path" '{"mode": "upsert"}')")
  [ "$(echo "$view" | field status)" = succeeded ] || fail "REST import of $path: $view"
  say "REST      $path -> succeeded, $(echo "$view" | field rows_valid) valid, $(echo "$view" | field rows_invalid) invalid"
done
compose exec -T -e TOKEN="$TOKEN" -e SAMPLES="$SAMPLES" rest python - <<'PY' || fail "gRPC imports"
import os, time
import grpc
from google.protobuf import struct_pb2
from service.generated import importer_pb2, importer_pb2_grpc

stub = importer_pb2_grpc.ImporterStub(grpc.insecure_channel("grpc:9090"))
auth = [("authorization", "Bearer " + os.environ["TOKEN"])]
for sample in os.environ["SAMPLES"].split():
    path, product = sample.split(":")
    request = struct_pb2.Struct()
    request.update({"customer_id": path.split("/")[0], "product_type": product,
                    "blob_uri": "file:///blobs/" + path, "options": {"mode": "upsert"}})
    job_id = stub.Enqueue(request, metadata=auth, timeout=10)["job_id"]
    for _ in range(120):
        job = stub.GetJob(importer_pb2.GetJobRequest(job_id=job_id), metadata=auth, timeout=10)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(1)
    assert job.status == "succeeded", (path, job)
    print(f"docker-check gRPC      {path} -> succeeded, {job.rows_valid} valid, {job.rows_invalid} invalid", flush=True)
PY
for sample in $SAMPLES; do
  path=${sample%%:*}; product=${sample##*:}; customer=${path%%/*}
  line=$(compose exec -T worker importctl enqueue --customer="$customer" --product="$product" \
         --uri="file:///blobs/$path" --option=mode=upsert --wait 2>&1) || fail "importctl import of $path: $line"
  say "importctl $path -> $(echo "$line" | tail -1 | tr -s ' ' | cut -d' ' -f3-)"
done

# -- a file in S3 (the optional s3 service: moto's server) ----------------------------------
compose exec -T rest python - <<'PY' || fail "uploading to the stack's S3"
import boto3
s3 = boto3.client("s3", endpoint_url="http://s3:5000", region_name="us-east-1")
s3.create_bucket(Bucket="imports")
s3.upload_file("/blobs/acme/users.csv", "imports", "customers/acme/users.csv")
PY
view=$(rest_wait "$(rest_job acme users s3://imports/customers/acme/users.csv '{"mode": "upsert"}')")
[ "$(echo "$view" | field status)" = succeeded ] || fail "S3 import: $view"
say "REST      s3://imports/customers/acme/users.csv -> succeeded, $(echo "$view" | field rows_valid) valid"
escape=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$REST/enqueue" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"customer_id": "acme", "product_type": "users", "blob_uri": "s3://imports/customers/globex/users.csv"}')
[ "$escape" = 400 ] || fail "an S3 URI under another customer's prefix answered $escape, not 400"
say "REST      s3://imports/customers/globex/... for acme -> 400"

# -- connections of an idle worker, then 10 workers -----------------------------------------
sleep 3
conns_of() {  # container -> app and customer DB connections from it
  local ip
  ip=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1")
  compose exec -T db psql -U postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE client_addr = '$ip'"
}
first_worker=$(compose ps -q worker | awk "NR == 1")
say "an idle worker container holds $(conns_of "$first_worker") Postgres connections (1 process x 8 threads)"
say "scaling the workers to 10"
compose up -d --scale worker=10 --no-recreate >"$WORK/scale.log" 2>&1 || { cat "$WORK/scale.log"; fail "scale"; }
wait_healthy
[ "$(curl -s -o /dev/null -w '%{http_code}' "$REST/readyz")" = 200 ] || fail "/readyz with 10 workers"
total=$(compose exec -T db psql -U postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
say "10 workers healthy, /readyz 200; $total client connections to Postgres (max_connections 400)"

# -- SIGTERM workers in the middle of a big job ---------------------------------------------
job=$(rest_job acme users acme/big.csv)
for _ in $(seq 60); do
  done_chunks=$(curl -sf "$REST/jobs/$job" -H "Authorization: Bearer $TOKEN" | python3 -c 'import json, sys; print(json.load(sys.stdin)["progress"]["chunks_done"])')
  [ "$done_chunks" -ge 1 ] && break
  sleep 0.5
done
victims=$(compose ps -q worker | awk "NR <= 5")
docker kill --signal TERM $victims >/dev/null
status=$(curl -sf "$REST/jobs/$job" -H "Authorization: Bearer $TOKEN" | field status)
[ "$status" = running ] || fail "the big job was $status, not running, when the workers got SIGTERM"
say "SIGTERM to 5 of the 10 worker containers while job $job ran ($done_chunks of 50 chunks done)"
view=$(rest_wait "$job" 300)
[ "$(echo "$view" | field status)" = succeeded ] || fail "the big job after SIGTERM: $view"
rows=$(compose exec -T db psql -U postgres -d import_acme -Atc "SELECT count(*) FROM users WHERE job_id = '$job'")
[ "$rows" = 999000 ] && [ "$(echo "$view" | field rows_inserted)" = 999000 ] || fail "expected 999000 rows, found $rows: $view"
say "big job succeeded after the SIGTERMs: 1,000,000 rows, 999,000 inserted exactly once, 1,000 invalid"
say "passed in $((SECONDS - T0)) s"
