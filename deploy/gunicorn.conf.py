"""gunicorn's configuration for Alem's web process (Procfile: ``web``).

Every value an operator may need to change comes from the environment, so one file serves a
laptop, a host behind nginx and the container (Dockerfile, compose.yaml):

- ``GUNICORN_BIND``: where to listen; ``127.0.0.1:8000`` unless given (the image says
  ``0.0.0.0:8000``, because the proxy reaches it over the container network).
- ``WEB_CONCURRENCY``: worker processes; 2 x cores + 1 unless given, at most 8.
- ``FORWARDED_ALLOW_IPS``: the proxies whose ``X-Forwarded-*`` headers gunicorn believes;
  loopback only unless given.

gunicorn runs this file as Python at start (``gunicorn -c deploy/gunicorn.conf.py alem.wsgi``);
``gunicorn --check-config`` loads it without serving.
"""

import os


def _int_from_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {value!r}.") from None
    if number < 1:
        raise SystemExit(f"{name} must be at least 1, got {number}.")
    return number


def _cores() -> int:
    # The cores this process may run on (a container's cpuset), not all the host's.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


# Loopback by default: only a proxy on the same machine may reach gunicorn. An explicit bind
# always wins over honcho's $PORT, which gunicorn would otherwise take as 0.0.0.0:$PORT.
bind = [os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")]

# Synchronous workers: Alem's requests are short and database-bound. gunicorn's rule of thumb,
# 2 x cores + 1, capped at 8 because each worker keeps a PostgreSQL connection open
# (DATABASE_CONN_MAX_AGE) and the Celery worker and other web hosts share max_connections.
# Scale out with more hosts rather than more workers per host.
workers = _int_from_env("WEB_CONCURRENCY", min(2 * _cores() + 1, 8))

# gunicorn sets the request's scheme from X-Forwarded-Proto only when the connection comes from
# one of these addresses; anyone else could claim HTTPS. Only the local proxy by default; a proxy
# on another host or container is named explicitly (compose.yaml names nginx's address). Never
# "*": the web port may be reachable from more than the proxy. (Django's own SECURE_PROXY_SSL_HEADER
# and trusted-proxy settings decide what the application believes; this is gunicorn's layer.)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Access log to stdout and errors to stderr: the process manager (honcho, Docker, systemd)
# collects them, and the web tier writes no log files. The client's address as the proxy saw it
# is logged next to the proxy's own, and the request's id (the X-Request-ID Alem answers with)
# ties the line to the application's log records for the same request.
accesslog = "-"
errorlog = "-"
access_log_format = (
    '%(h)s forwarded-for="%({x-forwarded-for}i)s" request-id=%({x-request-id}o)s %(t)s '
    '"%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
)

# A request that takes longer than this is stuck: the worker is killed and replaced.
timeout = 30
# On SIGTERM (deploy, scale-in, `docker compose stop`) workers finish the requests they are
# serving for up to this long before they are killed. Keep the container's stop grace period
# (compose.yaml: stop_grace_period) above it, or Docker kills them first.
graceful_timeout = 25
# Behind nginx, which keeps no idle connections to gunicorn open for long.
keepalive = 5

# Replace each worker after about a thousand requests, at staggered moments (the jitter), so a
# slow leak cannot grow without bound and the workers never all restart at once.
max_requests = 1000
max_requests_jitter = 100

# The workers' heartbeat files in memory rather than on a disk that may stall (gunicorn's advice
# for containers, where /tmp may be an overlay filesystem).
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# No control socket (gunicorn >= 25 creates one under $HOME by default): the web tier keeps no
# local state, the image's user has no writable home, and two instances on one host would
# contend for the same path. Operators restart with signals (HUP, TERM) or their process manager.
control_socket_disable = True
