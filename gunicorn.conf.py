"""Gunicorn settings for `gunicorn service.rest:app`, read from the working directory.

`-b` on the command line overrides the bind taken from the configuration (REST_ADDR).
"""

import os
import shutil
import tempfile

# GET /metrics counts the requests of every gunicorn worker: prometheus_client's multiprocess
# mode, whose folder must be set before anything imports prometheus_client (service.rest
# does) and must start empty. An operator's own PROMETHEUS_MULTIPROC_DIR is used as given.
_OWN_METRICS_DIR = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _OWN_METRICS_DIR = tempfile.mkdtemp(prefix="import-service-rest-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _OWN_METRICS_DIR

from service.edges.rest.app import startup_config  # noqa: E402
from service.logs import gunicorn_logconfig  # noqa: E402

# A bad configuration stops gunicorn here, in the master, with one line and exit code 2.
bind = [startup_config().rest_addr]

# gunicorn's error and access logs in the configured log_format (text, or JSON lines with
# method, path, status, bytes and duration_ms); access lines go to stdout.
logconfig_dict = gunicorn_logconfig(startup_config().log_format, startup_config().log_level)

# Threads, not one request per process: an upload (SPEC 19) holds its request for as long as
# the client sends, and a sync worker would be held with it. Each thread holds at most one
# piece (1 MiB) of an upload at a time; 2 x 16 threads answer 32 requests at once, so 8
# uploads leave room for /healthz, /enqueue and the status page. WEB_CONCURRENCY (gunicorn's
# own variable) and GUNICORN_THREADS change the two numbers.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
threads = int(os.environ.get("GUNICORN_THREADS") or 16)

# Under the 30 s most supervisors (docker stop, systemd) allow before SIGKILL.
graceful_timeout = 25

# Build the app once in the master: a start-up failure (bad config, unreachable app DB) then
# stops gunicorn with exit code 2 instead of failing every worker in turn, and migrations run
# once. Nothing opens a connection at build time except migrate, which closes its own.
preload_app = True

# The default access-log format logs the user of a Basic Authorization header: a client
# that puts its token there would see it in the log. This one leaves it out, and names the
# job (and its customer) a request was about, '-' for others (service.edges.rest.app.RequestJob).
access_log_format = (
    '%(h)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" job=%({import.job_id}e)s customer=%({import.customer_id}e)s'
)

# gunicorn's control socket ($HOME/.gunicorn/gunicorn.ctl) is not used here: every gunicorn of
# a machine would share that one path, and a read-only HOME (the container) logged an error at
# each start.
control_socket_disable = True


def on_exit(server):  # noqa: ANN001, ANN201
    """Remove the metrics folder this master made."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(_OWN_METRICS_DIR, ignore_errors=True)
