"""The system under test: embedded services (or given URLs), a fresh database and topic, and every process.

Everything lives apart from `make dev` and the test suite: state in `.dev/bench`,
ports chosen free by the OS, a database `bench_<run>` dropped at the end, a topic
and consumer group of its own. `--use-running URL` drives a stack someone else
started instead (then only what can be reached from the URLs is measured).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SQLCOUNT_DIR = Path(__file__).resolve().parent / "sqlcount"
TOKEN = "bench-token"


@dataclass
class StackOptions:
    state_dir: Path
    log_dir: Path
    run_id: str
    api_workers: int = 2
    api_threads: int = 8
    celery_workers: int = 2  # prefork pool processes of the one Celery worker
    beat: bool = True
    rate_limit: int = 100_000
    database_url: str | None = None
    redis_url: str | None = None
    kafka: str | None = None
    use_running: str | None = None  # API URL of a running stack
    token: str | None = None
    count_sql_dir: Path | None = None  # count SQL statements per process (sitecustomize)
    keep_db: bool = False
    log_level: str = "info"  # as the Procfile runs them: per-job log lines cost CPU too
    database_only: bool = False  # PostgreSQL and the run's database, no process of the stack (--scenarios search)
    extra_env: dict[str, str] = field(default_factory=dict)


def libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a process sent SIGTERM; past 20 s, SIGKILL its whole session."""
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


class Stack:
    """Start with `start()`, stop with `stop()`; `env`, `api_url`, `roots` (kind -> pid) describe it."""

    def __init__(self, opts: StackOptions):
        self.opts = opts
        self.env: dict[str, str] = {}
        self.api_url = ""
        self.token = opts.token or TOKEN
        self.roots: dict[str, int] = {}
        self.postmaster: int | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.services = None
        self._db_created: str | None = None
        self._base_db_url: str | None = None
        self.worker_name = f"bench-{opts.run_id}@%h"
        self.worker_hostname: str | None = None

    # ------------------------------------------------------------------ start

    def start(self) -> "Stack":
        o = self.opts
        o.log_dir.mkdir(parents=True, exist_ok=True)
        if o.use_running:
            return self._attach()
        from scripts.devstack import EmbeddedServices, ensure_topic, pick_port

        given = {k: v for k, v in (("DATABASE_URL", o.database_url or os.environ.get("DATABASE_URL")),
                                   ("REDIS_URL", o.redis_url or os.environ.get("REDIS_URL")),
                                   ("KAFKA_BOOTSTRAP_SERVERS", o.kafka or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")))
                 if v}
        if o.database_only:  # the other URLs count as given, so EmbeddedServices starts PostgreSQL only
            given = {"DATABASE_URL": given.get("DATABASE_URL", ""), "REDIS_URL": "unused",
                     "KAFKA_BOOTSTRAP_SERVERS": "unused"}
        self.services = EmbeddedServices(o.state_dir, env=given, redis_port=None, kafka_port=None)
        svc_env = self.services.start()
        self.postmaster = self.services.pids().get("postgres")
        self._base_db_url = svc_env["DATABASE_URL"]
        db_url = self._fresh_database(svc_env["DATABASE_URL"], f"bench_{o.run_id}")
        if o.database_only:
            self.env = {**os.environ, "DATABASE_URL": db_url}
            return self
        redis_url = svc_env["REDIS_URL"]
        if "redis" in self.services.started:
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        topic = f"bench-{o.run_id}"
        ensure_topic(svc_env["KAFKA_BOOTSTRAP_SERVERS"], topic, 6)
        port = pick_port(None)
        env = dict(os.environ)
        for var in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"):
            env.pop(var, None)
        env.update({
            "DATABASE_URL": db_url, "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": svc_env["KAFKA_BOOTSTRAP_SERVERS"], "KAFKA_TOPIC": topic,
            "KAFKA_GROUP_ID": f"bench-{o.run_id}", "WALLET_API_KEYS": f"{TOKEN}:bench:read|write",
            "RATE_LIMIT": str(o.rate_limit), "GUNICORN_WORKERS": str(o.api_workers),
            "GUNICORN_THREADS": str(o.api_threads), "API_PORT": str(port),
            "CELERY_BEAT_SCHEDULE": str(o.state_dir / f"celerybeat-{o.run_id}"),
            "WEBHOOK_ALLOW_PRIVATE_URLS": "1",  # the webhooks scenario's receiver listens on 127.0.0.1
            "LOG_LEVEL": o.log_level.upper(), "GUNICORN_LOG_LEVEL": o.log_level, "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
        })
        paths = [str(REPO)]
        if o.count_sql_dir is not None:
            o.count_sql_dir.mkdir(parents=True, exist_ok=True)
            paths.insert(0, str(SQLCOUNT_DIR))
            env["BENCH_SQLCOUNT_DIR"] = str(o.count_sql_dir)
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.update(o.extra_env)
        self.env = env
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, check=True,
                       capture_output=True)
        self.api_url = f"http://127.0.0.1:{port}"
        py = sys.executable
        self._spawn("api", [py, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                            "app.api:create_app()"])
        self._spawn_worker(o.celery_workers)
        if o.beat:
            self._spawn("beat", [py, "-m", "celery", "-A", "tasks", "beat", "-l", o.log_level, "--schedule",
                                 env["CELERY_BEAT_SCHEDULE"]])
        self._spawn_event_pipeline()
        for name in ("redis", "kafka"):
            if name in self.services.procs:
                self.roots[name] = self.services.procs[name].pid
        self._wait_ready()
        return self

    def restart_worker(self, concurrency: int, pool: str = "prefork", timeout: float = 60.0) -> None:
        """Replace the Celery worker by one with `concurrency` processes (or threads) of `pool`; wait until it answers."""
        self._stop_kind("celery")
        self._spawn_worker(concurrency, pool)
        self._wait_worker(time.monotonic() + timeout)

    def _spawn_worker(self, concurrency: int, pool: str = "prefork") -> None:
        """The Celery worker of the wallet's queues, also running the bench's no-op task (bench/noop_task.py)."""
        self._spawn("celery", [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "commands,maintenance",
                               "-I", "bench.noop_task", "--pool", pool, "--concurrency", str(concurrency),
                               "-l", self.opts.log_level, "-n", self.worker_name])

    def _attach(self) -> "Stack":
        o = self.opts
        self.api_url = o.use_running.rstrip("/")
        self.token = o.token or os.environ.get("WALLET_API_KEY") or ""
        db = o.database_url or os.environ.get("DATABASE_URL")
        redis_url = o.redis_url or os.environ.get("REDIS_URL")
        if not (db and redis_url and self.token):
            raise SystemExit("--use-running needs --database-url, --redis-url (or the env vars) and --token "
                             "(or WALLET_API_KEY)")
        self.env = {**os.environ, "DATABASE_URL": db, "REDIS_URL": redis_url}
        self.worker_name = ""
        return self

    # What the relay and the history worker log once they work (app/relay.py, history/worker.py).
    _READY = {"relay": "this relay is active", "history-worker": "assigned partitions"}
    WEBHOOK_KINDS = ("webhook-dispatcher", "webhook-worker", "webhook-failing-worker")

    def _spawn_event_pipeline(self, webhooks: bool = False) -> None:
        self._spawn("relay", [sys.executable, "-m", "app.relay"])
        self._spawn("history-worker", [sys.executable, "-m", "history.worker"])
        if webhooks:  # only for the webhooks scenario: the dispatcher reads every event, wanted or not
            self.env["WEBHOOK_GROUP_ID"] = self.env["KAFKA_TOPIC"] + "-webhooks"
            self._spawn("webhook-dispatcher", [sys.executable, "-m", "app.webhook_dispatcher"])
            self._spawn("webhook-worker", [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "webhooks",
                                           "-P", "threads", "--concurrency", "16", "-n",
                                           f"webhooks-{self.opts.run_id}@%h", "-l", self.opts.log_level])
            self._spawn("webhook-failing-worker", [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q",
                                                   "webhooks-failing", "-P", "threads", "--concurrency", "8", "-n",
                                                   f"webhooks-failing-{self.opts.run_id}@%h", "-l", self.opts.log_level])

    def fresh_topic(self, label: str, timeout: float = 60.0, webhooks: bool = False) -> None:
        """Restart the relay and the history worker on a new Kafka topic; returns once both work.

        tansu keeps a topic in memory and gets slower as it grows (a produce at
        190 events/s cost it 46 ms of CPU per second on an empty topic, 66-90 on
        a 100k-event one, 34 on a fresh topic beside it), so each load scenario
        gets its own topic rather than paying for the events of the scenarios
        before it. Apache Kafka appends to log segments and has no such cost.
        Called between scenarios, when every outbox row is published.
        """
        if "relay" not in self.procs:
            return  # attached to a running stack: its topic stays
        from scripts.devstack import ensure_topic

        for kind in ("relay", "history-worker", *self.WEBHOOK_KINDS):
            self._stop_kind(kind)
        topic = f"bench-{self.opts.run_id}-{label}"
        ensure_topic(self.env["KAFKA_BOOTSTRAP_SERVERS"], topic, 6)
        self.env.update(KAFKA_TOPIC=topic, KAFKA_GROUP_ID=topic)
        ready = {**self._READY, **({"webhook-dispatcher": "assigned partitions"} if webhooks else {})}
        offsets = {kind: self._log_size(kind) for kind in ready}
        self._spawn_event_pipeline(webhooks)
        deadline = time.monotonic() + timeout
        for kind, line in ready.items():
            while line not in self._log_since(kind, offsets[kind]):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start on {topic} within {timeout}s; see its log")
                time.sleep(0.1)

    def _log_size(self, kind: str) -> int:
        path = self.opts.log_dir / f"{kind}.log"
        return path.stat().st_size if path.exists() else 0

    def _log_since(self, kind: str, offset: int) -> str:
        with open(self.opts.log_dir / f"{kind}.log", "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _stop_kind(self, kind: str) -> None:
        self.roots.pop(kind, None)
        proc = self.procs.pop(kind, None)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        _reap(proc)

    def _spawn(self, kind: str, cmd: list[str]) -> None:
        log = open(self.opts.log_dir / f"{kind}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[kind] = proc
        self.roots[kind] = proc.pid

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(self.api_url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"API did not answer within {timeout}s; see {self.opts.log_dir}/api.log")
        self._wait_worker(deadline)

    def _wait_worker(self, deadline: float) -> None:
        celery_app = self.celery_app()
        while time.monotonic() < deadline:
            self._check_alive()
            replies = celery_app.control.ping(timeout=0.5) or []
            hosts = [host for reply in replies for host in reply if f"bench-{self.opts.run_id}@" in host]
            if hosts:
                self.worker_hostname = hosts[0]
                return
        raise RuntimeError(f"Celery worker did not answer in time; see {self.opts.log_dir}/celery.log")

    def _check_alive(self) -> None:
        for kind, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {proc.returncode}; see {self.opts.log_dir}/{kind}.log")

    def celery_app(self):
        """The harness's own Celery app on the stack's broker (os.environ must hold REDIS_URL first)."""
        os.environ["REDIS_URL"] = self.env["REDIS_URL"]
        os.environ["DATABASE_URL"] = self.env["DATABASE_URL"]
        from app.config import settings

        settings.cache_clear()
        from tasks import celery_app

        celery_app.conf.broker_url = self.env["REDIS_URL"]
        return celery_app

    def pg(self):
        """A fresh autocommit psycopg connection to the stack's database."""
        import psycopg

        return psycopg.connect(libpq(self.env["DATABASE_URL"]), autocommit=True, application_name="bench-harness")

    def _fresh_database(self, base_url: str, name: str) -> str:
        import psycopg
        from psycopg import sql
        from sqlalchemy.engine import make_url

        url = make_url(base_url)
        with psycopg.connect(libpq(url.set(database="postgres").render_as_string(hide_password=False)),
                             autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._db_created = name
        return url.set(database=name).render_as_string(hide_password=False)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        for kind in ("api", "beat", "celery", "relay", "history-worker", *self.WEBHOOK_KINDS):
            proc = self.procs.get(kind)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            _reap(proc)
        self.procs.clear()
        if self._db_created and not self.opts.keep_db and self._base_db_url:
            import psycopg
            from psycopg import sql
            from sqlalchemy.engine import make_url

            with contextlib.suppress(Exception):
                admin = make_url(self._base_db_url).set(database="postgres").render_as_string(hide_password=False)
                with psycopg.connect(libpq(admin), autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self._db_created)))
        if self.services is not None:
            self.services.stop()
            self.services = None
