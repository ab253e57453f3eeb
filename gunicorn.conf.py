"""Gunicorn settings shared by the API and the History API; every knob comes from the environment.

The bind address is given on the command line (see Procfile / docker-compose.yml).
"""

import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# Threads, not processes, carry the concurrency: handlers mostly wait on Postgres/Redis.
worker_class = "gthread"
workers = _int("GUNICORN_WORKERS", 2)
threads = _int("GUNICORN_THREADS", 8)

# A request that takes longer than this is stuck: the arbiter restarts its worker.
timeout = _int("GUNICORN_TIMEOUT", 30)
# On SIGTERM, let in-flight requests finish for up to this long before killing workers.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycle workers now and then so a slow leak cannot grow without bound (jitter avoids a herd).
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 0)

# Access log off by default (it costs CPU per request); GUNICORN_ACCESS_LOG=1 sends it to stdout.
accesslog = "-" if _flag("GUNICORN_ACCESS_LOG") else None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Behind a proxy (compose, k8s) trust X-Forwarded-* only from these addresses.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# Prometheus multiprocess mode: every worker writes its metrics to files in one
# folder per gunicorn instance, which /metrics aggregates (prometheus-client docs).
def on_starting(server):
    import tempfile

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wallet-metrics-")
        server._wallet_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    import shutil

    created = getattr(server, "_wallet_metrics_dir", None)
    if created:
        shutil.rmtree(created, ignore_errors=True)
