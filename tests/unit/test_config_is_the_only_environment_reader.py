"""The service reads its environment in app/config.py only: every knob is a Settings field, with its reason."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICE = ["app", "tasks", "history", "celeryconfig.py"]
READS = re.compile(r"\bos\.(environ|getenv)\b|\bgetenv\(|from os import .*\b(environ|getenv)\b")


def test_no_service_module_but_app_config_reads_the_environment():
    files = [f for name in SERVICE for f in ((REPO / name).rglob("*.py") if (REPO / name).is_dir() else [REPO / name])]
    readers = [f"{f.relative_to(REPO)}:{n}" for f in files if f != REPO / "app" / "config.py"
               for n, line in enumerate(f.read_text().splitlines(), 1) if READS.search(line)]
    assert len(files) > 20 and readers == []
