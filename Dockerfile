# Import service image: REST (gunicorn), gRPC, workers and importctl all run from it;
# docker-compose.yml picks the command per service. `make docker-check` builds and tests it.
#
# Two stages: the first installs the runtime dependencies (requirements.txt only: no test,
# lint or build tools) into a virtualenv; the second copies that virtualenv and the code.
# Nothing secret is inside: API tokens, the customer map (DSNs with passwords) and the app
# DB's DSN come from the environment or mounted files at run time (see docker-compose.yml).
#
# The base image: pass a digest where the registry can be reached, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> .
# (make docker-check pins the digest of the image it finds when it has one.)
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
# requirements.txt is fully pinned and all of it has wheels (no compiler needed). pip and
# setuptools are not needed at run time.
RUN python3 -m venv /opt/import-service \
 && /opt/import-service/bin/pip install -r /tmp/requirements.txt \
 && /opt/import-service/bin/pip uninstall -y -q pip setuptools \
 && find /opt/import-service -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/import-service/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    HOME=/home/app \
    CONFIG_PATH=/app/config.json \
    CONFIG_ENV=docker
COPY --from=deps /opt/import-service /opt/import-service
# A non-root user with a writable HOME; the code stays owned by root (read-only for it).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY service ./service
COPY actors ./actors
COPY schemas ./schemas
COPY config.json gunicorn.conf.py ./
COPY docker/importctl /usr/local/bin/importctl
USER app

# 8080: REST (gunicorn), 9090: gRPC (python -m service.grpc_server), 9191: a worker pool's metrics.
EXPOSE 8080 9090 9191

# REST by default; gunicorn reads /app/gunicorn.conf.py (bind from REST_ADDR, JSON or text
# logs from LOG_FORMAT). More gunicorn flags through GUNICORN_CMD_ARGS.
CMD ["gunicorn", "service.rest:app"]
