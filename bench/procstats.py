"""CPU seconds and RSS per process kind, sampled with psutil on the process trees of the stack.

Kinds: api (gunicorn master + workers), celery-main, celery-pool (the prefork
children), beat, relay, history-worker, loadgen, redis, kafka, and PostgreSQL
split by who its backend serves (pg:api, pg:celery-pool, pg:relay, ...,
pg:pgbench for the pgbench scenario's clients, pg:other for the postmaster,
checkpointer, autovacuum and unknown clients), read from
pg_stat_activity.application_name (`wallet:<pid>` of the client).
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import psutil


class Sampler:
    """Samples every `interval` s in a thread; `window()` gives CPU/RSS per kind between two marks."""

    def __init__(self, roots: dict[str, int], interval: float = 0.5, pg_conn_factory=None, postmaster: int | None = None):
        self.roots = dict(roots)  # kind -> root pid (children are walked)
        self.interval = interval
        self.postmaster = postmaster
        self._pg_conn_factory = pg_conn_factory
        self._pg_conn = None
        self._procs: dict[int, psutil.Process] = {}
        self._client_kind: dict[int, str] = {}  # client pid -> kind
        self._backend_client: dict[int, int | str] = {}  # backend pid -> client pid or label
        self.samples: list[tuple[float, dict[int, tuple[str, float, int]]]] = []  # (t, {pid: (kind, cpu, rss)})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._lock = threading.Lock()
        self._last_pg = 0.0

    def add_root(self, kind: str, pid: int) -> None:
        with self._lock:
            self.roots[kind] = pid

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._pg_conn is not None:
            try:
                self._pg_conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        if p is None:
            try:
                p = self._procs[pid] = psutil.Process(pid)
            except psutil.Error:
                return None
        return p

    def _kinds(self) -> dict[int, str]:
        """pid -> kind for every process of the stack right now."""
        out: dict[int, str] = {}
        with self._lock:
            roots = dict(self.roots)
        for kind, pid in roots.items():
            root = self._proc(pid)
            if root is None:
                continue
            if kind == "celery":
                out[pid] = "celery-main"
                child_kind = "celery-pool"
            else:
                out[pid] = kind
                child_kind = kind
            try:
                for child in root.children(recursive=True):
                    out[child.pid] = child_kind
            except psutil.Error:
                pass
        self._client_kind = dict(out)
        if self.postmaster:
            self._refresh_backends()
            pm = self._proc(self.postmaster)
            if pm is not None:
                out[self.postmaster] = "pg:other"
                try:
                    children = pm.children()
                except psutil.Error:
                    children = []
                for child in children:
                    client = self._backend_client.get(child.pid)
                    if isinstance(client, int):
                        kind = self._client_kind.get(client, "other")
                    else:
                        kind = client or "other"
                    out[child.pid] = f"pg:{kind}"
        return out

    def _refresh_backends(self) -> None:
        if self._pg_conn_factory is None or time.monotonic() - self._last_pg < 2.0:
            return
        self._last_pg = time.monotonic()
        try:
            if self._pg_conn is None:
                self._pg_conn = self._pg_conn_factory()
            rows = self._pg_conn.execute("SELECT pid, application_name FROM pg_stat_activity").fetchall()
        except Exception:  # noqa: BLE001
            self._pg_conn = None
            return
        mapping: dict[int, int | str] = {}
        for pid, app in rows:
            app = app or ""
            head, _, tail = app.rpartition(":")
            if tail.isdigit():
                mapping[pid] = int(tail)
            elif app.startswith("bench"):
                mapping[pid] = app if app == "bench-loadgen" else "harness"
            elif app == "pgbench":  # the pgbench scenario's clients (PGAPPNAME)
                mapping[pid] = "pgbench"
            else:
                mapping[pid] = "other"
        mapping = {k: ("loadgen" if v == "bench-loadgen" else v) for k, v in mapping.items()}
        self._backend_client = mapping

    def sample(self) -> None:
        now = time.time()
        snap: dict[int, tuple[str, float, int]] = {}
        for pid, kind in self._kinds().items():
            p = self._proc(pid)
            if p is None:
                continue
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    snap[pid] = (kind, cpu.user + cpu.system, p.memory_info().rss)
            except psutil.Error:
                self._procs.pop(pid, None)
        self.samples.append((now, snap))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sampler must not take the benchmark down
                pass
            self._stop.wait(self.interval)

    def window(self, t0: float, t1: float) -> dict[str, dict]:
        """CPU seconds and peak RSS (sum over the kind's processes) per kind between t0 and t1."""
        inside = [(t, s) for t, s in self.samples if t0 <= t <= t1]
        if not inside:
            return {}
        first: dict[int, float] = {}
        last: dict[int, tuple[str, float]] = {}
        peak: dict[str, int] = defaultdict(int)
        for _, snap in inside:
            per_kind: dict[str, int] = defaultdict(int)
            for pid, (kind, cpu, rss) in snap.items():
                first.setdefault(pid, cpu)
                last[pid] = (kind, cpu)
                per_kind[kind] += rss
            for kind, rss in per_kind.items():
                peak[kind] = max(peak[kind], rss)
        cpu_by_kind: dict[str, float] = defaultdict(float)
        for pid, (kind, cpu) in last.items():
            cpu_by_kind[kind] += cpu - first[pid]
        kinds = sorted(set(cpu_by_kind) | set(peak))
        return {k: {"cpu_s": round(cpu_by_kind.get(k, 0.0), 3), "peak_rss_mb": round(peak.get(k, 0) / 2**20, 1)}
                for k in kinds}

    def rss_series(self, kinds: tuple[str, ...], t0: float, t1: float) -> list[tuple[float, dict[str, float]]]:
        """(t, {kind: RSS MB summed over its processes}) for the samples between t0 and t1."""
        out = []
        for t, snap in self.samples:
            if t0 <= t <= t1:
                per = defaultdict(float)
                for _pid, (kind, _cpu, rss) in snap.items():
                    if kind in kinds:
                        per[kind] += rss / 2**20
                out.append((t, dict(per)))
        return out
