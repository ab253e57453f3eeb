"""The webhooks scenario: uniform transfers while an endpoint receives every notification of the bench tenant.

The stack runs the webhook dispatcher and a webhook worker for this scenario
only. A receiver in this process answers 204 at once and notes when each
request arrived; a notification's delivery latency is its first arrival minus
the event's `timestamp` (when the command was applied, or the job became
final): outbox, relay, Kafka, dispatcher, Celery and the POST. Same clock: the
stack runs on this machine.
"""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from bench.scenarios import pct


class Receiver:
    def __init__(self):
        self.first_arrival: dict[str, tuple[float, str, float]] = {}  # webhook-id -> (arrival, type, event time)
        self.requests = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                arrival = time.time()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                event_time = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).timestamp()
                with lock:
                    receiver.requests += 1
                    receiver.first_arrival.setdefault(self.headers["webhook-id"], (arrival, body["type"], event_time))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(runner, duration: float, warmup: float, ceiling_rate: float | None, max_outstanding: int | None,
        say=print, timeout: float = 120.0) -> dict:
    stack = runner.stack
    receiver = Receiver()
    headers = {"Authorization": f"Bearer {stack.token}"}
    r = requests.post(f"{stack.api_url}/webhook-endpoints", headers=headers, timeout=10,
                      json={"url": receiver.url, "events": ["*"], "description": "bench"})
    r.raise_for_status()
    endpoint = r.json()["id"]
    try:
        fig = runner.load_scenario("webhooks", "transfer", duration, warmup, ceiling_rate,
                                   max_outstanding=max_outstanding)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = runner.conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FROM webhook_deliveries"
                " WHERE endpoint_id = %s", (endpoint,)).fetchone()
            if pending[0] == 0 and len(receiver.first_arrival) >= pending[1]:
                break
            time.sleep(0.5)
        deliveries = runner.conn.execute(
            "SELECT status, count(*) FROM webhook_deliveries WHERE endpoint_id = %s GROUP BY status",
            (endpoint,)).fetchall()
    finally:
        requests.delete(f"{stack.api_url}/webhook-endpoints/{endpoint}", headers=headers, timeout=10)
        receiver.close()
    latencies = [arrival - event_time for arrival, _, event_time in receiver.first_arrival.values()]
    by_type: dict[str, list[float]] = {}
    for arrival, kind, event_time in receiver.first_arrival.values():
        by_type.setdefault(kind, []).append(arrival - event_time)
    fig["webhooks"] = {
        "notifications": len(receiver.first_arrival), "requests": receiver.requests,
        "deliveries_by_status": {status: n for status, n in deliveries},
        "delivery_latency_ms": {**pct(latencies, (50, 99)), "max": round(max(latencies) * 1000, 1) if latencies else None},
        "delivery_latency_ms_by_type": {k: pct(v, (50, 99)) for k, v in sorted(by_type.items())},
    }
    w = fig["webhooks"]
    say(f"webhooks: {fig['completed_per_s']:.0f} transfers/s with an endpoint on every notification; "
        f"{w['notifications']} notifications, delivery latency p50 {w['delivery_latency_ms'].get('p50')} ms, "
        f"p99 {w['delivery_latency_ms'].get('p99')} ms")
    return fig
