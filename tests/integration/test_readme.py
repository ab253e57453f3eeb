"""The README's walkthrough works as printed, against gunicorn and a real worker."""
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.conftest import REPO, TENANT_A_KEY, wait_for

pytestmark = pytest.mark.usefixtures("worker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def api_url(processes):
    port = free_port()
    proc = processes.start([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind",
                            f"127.0.0.1:{port}", "app.api:create_app()"], log_name="api-readme")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(f"{url}/health"), timeout=30, what="gunicorn to serve the API")
    yield url
    processes.stop(proc)


def walkthrough() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, re.S))


def test_the_readme_walkthrough_runs_as_printed(api_url):
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], env={"API": api_url, "WALLET_API_KEY": TENANT_A_KEY, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert '"balance": "69.50"' in out and '"balance": "30.50"' in out
    assert '"code": "INSUFFICIENT_FUNDS"' in out
    assert '"code": "VALIDATION_FAILED"' in out
    assert '"status": "succeeded"' in out
    assert '"status": "completed"' in out and '"succeeded": 2' in out  # the batch
    assert '"available_balance": "48.50"' in out  # 69.50 - 1.00 in the batch, with a 20.00 hold
    assert '"type": "CAPTURE"' in out and '"type": "REVERSAL"' in out
    assert '"closing_balance": "51.00"' in out  # 68.50 - 12.50 captured - 7.00 withdrawn + 2.00 reversed
    assert '"overdraft_limit": "10.00"' in out and '"ticket": "T-7"' in out  # If-Match and metadata
    assert '"balance": "100.00"' in out and '"as_of"' in out  # the balance as of the top-up's instant


def test_gunicorn_serves_problem_json_for_malformed_requests(api_url):
    req = urllib.request.Request(f"{api_url}/wallets", data=b"{nope", method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {TENANT_A_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400
    assert e.value.headers["Content-Type"] == "application/problem+json"
