"""`--profile`: py-spy on the API, the Celery worker, the relay and the history worker during a scenario.

py-spy records collapsed stacks (`raw`, also readable by speedscope.app and
inferno/flamegraph.pl); each is converted here to a speedscope JSON and a
flame-graph SVG, and summarised (CPU by package and by function, per command).
"""
from __future__ import annotations

import contextlib
import html
import json
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

# samples/s. With --gil only the thread holding the GIL is sampled, so samples ≈ CPU time of Python code
# (py-spy's idle detection alone counts threads blocked on sockets as busy: wall time, not CPU).
RATE = 100
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, out_dir: Path, targets: dict[str, int]):
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.targets = targets  # kind -> pid (api and celery are followed into their children)
        self.procs: dict[str, subprocess.Popen] = {}
        self.exe = py_spy()

    def start(self, duration: float) -> None:
        if not self.exe:
            raise RuntimeError("py-spy is not installed (pip install -r requirements.txt)")
        for kind, pid in self.targets.items():
            cmd = [self.exe, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--nonblocking", "--gil",
                   "--output", str(self.out / f"{kind}.collapsed.txt"), "--duration", str(int(duration) + 600)]
            if kind in ("api", "celery"):
                cmd.append("--subprocesses")
            log = open(self.out / f"{kind}.py-spy.log", "wb")  # noqa: SIM115
            self.procs[kind] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            log.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        for kind in self.procs:
            path = self.out / f"{kind}.collapsed.txt"
            if path.exists():
                stacks = read_collapsed(path)
                write_speedscope(stacks, self.out / f"{kind}.speedscope.json", kind)
                write_flamegraph(stacks, self.out / f"{kind}.flamegraph.svg", kind)


def read_collapsed(path: Path) -> Counter:
    stacks: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def _frames(stack: str) -> list[str]:
    return stack.split(";")


def _process_of(frames: list[str]) -> str:
    """The innermost `process <pid>:"cmd"` frame (--subprocesses nests a child under its parent)."""
    procs = [f for f in frames if f.startswith("process ")]
    return procs[-1] if procs else ""


def package_of(frame: str) -> str:
    m = _FRAME.match(frame)
    path = m.group("file") if m else frame
    if "site-packages/" in path:
        return path.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    for top in ("app/", "tasks/", "history/", "bench/"):
        if path.startswith(top) or f"/{top}" in path:
            rest = path[path.index(top):]
            parts = rest.split("/")
            return "/".join(parts[:2]).removesuffix(".py") if len(parts) > 1 else parts[0]
    if "python3" in path or path.startswith("<"):
        mod = path.rsplit("/", 1)[-1].removesuffix(".py")
        return f"stdlib:{mod}"
    return path or "?"


def summarise(stacks: Counter, commands: int, role_of_process=None) -> dict:
    """CPU (ms per command) by role (process), leaf package, and inclusive function."""
    total = sum(stacks.values())
    by_role: Counter = Counter()
    by_package: dict[str, Counter] = defaultdict(Counter)
    inclusive: dict[str, Counter] = defaultdict(Counter)
    for stack, n in stacks.items():
        frames = _frames(stack)
        proc = _process_of(frames)
        role = role_of_process(proc) if role_of_process else (proc or "main")
        body = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        by_role[role] += n
        if body:
            by_package[role][package_of(body[-1])] += n
        seen = set()
        for f in body:
            m = _FRAME.match(f)
            key = f"{m.group('func')} ({m.group('file').split('site-packages/')[-1]})" if m else f
            if key not in seen:
                seen.add(key)
                inclusive[role][key] += n

    def ms(n: int) -> float:
        return round(n / RATE * 1000 / max(1, commands), 3)

    return {
        "samples": total, "cpu_s": round(total / RATE, 2), "ms_per_command": ms(total),
        "by_role": {r: ms(n) for r, n in by_role.most_common()},
        "self_by_package": {r: {p: ms(n) for p, n in c.most_common(15)} for r, c in by_package.items()},
        "inclusive_top": {r: {f: ms(n) for f, n in c.most_common(30)} for r, c in inclusive.items()},
    }


def write_speedscope(stacks: Counter, path: Path, name: str) -> None:
    frames: list[dict] = []
    index: dict[str, int] = {}
    samples, weights = [], []
    for stack, n in stacks.items():
        ids = []
        for f in _frames(stack):
            if f not in index:
                index[f] = len(frames)
                m = _FRAME.match(f)
                frames.append({"name": m.group("func"), "file": m.group("file"),
                               "line": int(m.group("line") or 0)} if m else {"name": f})
            ids.append(index[f])
        samples.append(ids)
        weights.append(n)
    doc = {"$schema": "https://www.speedscope.app/file-format-schema.json", "shared": {"frames": frames},
           "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                         "endValue": sum(weights), "samples": samples, "weights": weights}],
           "name": name, "exporter": "bench.profile"}
    path.write_text(json.dumps(doc))


def write_flamegraph(stacks: Counter, path: Path, title: str, width: int = 1600, row: int = 16) -> None:
    """A minimal static flame graph (SVG): width ∝ samples, root at the bottom; hover shows the frame."""
    tree: dict = {"n": 0, "c": {}}
    for stack, n in stacks.items():
        node = tree
        node["n"] += n
        for f in _frames(stack):
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += n
    total = max(1, tree["n"])

    def depth(node) -> int:
        return 1 + max((depth(c) for c in node["c"].values()), default=0)

    levels = depth(tree)
    height = (levels + 2) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
           f'font-size="11"><rect width="100%" height="100%" fill="#fff"/>'
           f'<text x="5" y="12">{html.escape(title)}: {total} samples ({total / RATE:.1f} s CPU)</text>']

    def walk(node, x: float, level: int) -> None:
        for name, child in sorted(node["c"].items(), key=lambda kv: -kv[1]["n"]):
            w = child["n"] / total * width
            if w >= 0.5:
                y = height - (level + 1) * row
                hue = 20 + (hash(package_of(name)) % 40)
                label = html.escape(name)
                pct = child["n"] / total * 100
                out.append(f'<g><title>{label} — {child["n"]} samples ({pct:.1f}%)</title>'
                           f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                           f'fill="hsl({hue},85%,60%)"/>')
                if w > 40:
                    out.append(f'<text x="{x + 2:.1f}" y="{y + row - 4}">{label[: int(w / 6.6)]}</text>')
                out.append("</g>")
                walk(child, x, level + 1)
            x += w

    walk(tree, 0.0, 0)
    out.append("</svg>")
    path.write_text("".join(out))


def sql_counts(directory: Path) -> dict[int, dict]:
    """pid -> {ppid, argv, counts} from the sitecustomize counters (bench/sqlcount)."""
    out = {}
    for p in directory.glob("*.json"):
        with contextlib.suppress(Exception):
            d = json.loads(p.read_text())
            out[int(d["pid"])] = d
    return out


def diff_sql(before: dict[int, dict], after: dict[int, dict], kind_of) -> dict[str, Counter]:
    """Statement counts per process kind between two snapshots."""
    out: dict[str, Counter] = defaultdict(Counter)
    for pid, d in after.items():
        prev = before.get(pid, {}).get("counts", {})
        kind = kind_of(pid, d)
        for k, v in d["counts"].items():
            if v - prev.get(k, 0):
                out[kind][k] += v - prev.get(k, 0)
    return out
