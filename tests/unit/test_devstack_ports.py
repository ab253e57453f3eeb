"""`make dev` with a port of the stack taken fails at once, naming the variable to set."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_busy_api_port_stops_make_dev_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "API_PORT": str(port)}
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "scripts.devstack", "--state-dir", str(tmp_path), "up"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {port} (API_PORT) is already in use" in result.stderr + result.stdout
    assert "make dev API_PORT=" in result.stderr + result.stdout
    assert time.monotonic() - started < 15  # no embedded service was started first
    assert not (tmp_path / "pg").exists()
