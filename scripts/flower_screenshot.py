"""Screenshot Flower's task list with headless Chromium, so the picture in the docs can be retaken.

    python -m scripts.flower_screenshot                 # make dev's Flower (auth from .dev/flower-auth)
    python -m scripts.flower_screenshot --url http://127.0.0.1:5555 --auth admin:secret --out shot.png

Needs Debian's `chromium` (`apt-get install chromium`). The page is Flower's
/tasks list, newest first.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent


def _default_auth(state_dir: Path) -> str | None:
    if os.environ.get("FLOWER_BASIC_AUTH"):
        return os.environ["FLOWER_BASIC_AUTH"]
    path = state_dir / "flower-auth"
    return path.read_text().strip() if path.exists() else None


def page_url(url: str, auth: str | None) -> str:
    """Flower's task list URL, with the basic-auth credentials in it (Chromium sends them for the whole origin)."""
    parts = urlsplit(url.rstrip("/") + "/tasks")
    netloc = parts.netloc
    if auth:
        user, _, password = auth.partition(":")
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def screenshot(url: str, out: Path, width: int = 1600, height: int = 900, wait_ms: int = 8000) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=120)
    if not out.exists() or out.stat().st_size < 1000:
        raise SystemExit(f"no screenshot was written to {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.flower_screenshot", description=__doc__.split("\n")[0])
    p.add_argument("--state-dir", default=str(REPO / ".dev"), help="make dev's state folder (for the auth)")
    p.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('FLOWER_PORT', '5555')}")
    p.add_argument("--auth", default=None, help="user:password (default: FLOWER_BASIC_AUTH or <state-dir>/flower-auth)")
    p.add_argument("--out", default=str(REPO / "docs" / "img" / "flower-tasks.png"))
    args = p.parse_args(argv)
    auth = args.auth or _default_auth(Path(args.state_dir))
    screenshot(page_url(args.url, auth), Path(args.out))
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
