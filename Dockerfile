# Import service image: REST (gunicorn), gRPC, workers and importctl all run from it;
# docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
# requirements.txt is fully pinned and all of it has wheels (no compiler needed).
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .
# The project itself, for the `importctl` console script (pyproject.toml).
# setuptools comes pinned from requirements.txt, hence --no-build-isolation.
RUN pip install --no-deps --no-build-isolation -e . \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

# The code stays owned by root (read-only for the service); nothing is written under /app at run time.
USER app

# Settings come from config.json's "docker" section; env variables override single keys
# (APP_DB_DSN, REST_ADDR, GRPC_ADDR, WORKER_CONCURRENCY, CUSTOMER_MAP_PATH, BLOB_ROOT, API_TOKENS_PATH...).
ENV CONFIG_PATH=/app/config.json \
    CONFIG_ENV=docker

# 8080: REST (gunicorn), 9090: gRPC (python -m service.grpc_server).
EXPOSE 8080 9090

# REST by default. Extra gunicorn flags (workers, timeouts) via GUNICORN_CMD_ARGS.
CMD ["gunicorn", "-b", "0.0.0.0:8080", "service.rest:app"]
