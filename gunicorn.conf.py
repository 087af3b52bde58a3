"""Gunicorn settings for `gunicorn service.rest:app`, read from the working directory.

`-b` on the command line overrides the bind taken from the configuration (REST_ADDR).
"""

from service.rest import startup_config

# A bad configuration stops gunicorn here, in the master, with one line and exit code 2.
bind = [startup_config().rest_addr]

# Under the 30 s most supervisors (docker stop, systemd) allow before SIGKILL.
graceful_timeout = 25

# Build the app once in the master: a start-up failure (bad config, unreachable app DB) then
# stops gunicorn with exit code 2 instead of failing every worker in turn, and migrations run
# once. Nothing opens a connection at build time except migrate, which closes its own.
preload_app = True

# The default access-log format logs the user of a Basic Authorization header: a client
# that puts its token there would see it in the log. This one leaves it out.
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
