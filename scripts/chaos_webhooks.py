"""Webhooks in the chaos test (scripts/chaos.py): an in-process receiver, the endpoints, the checks.

`Receiver` is a threaded HTTP server on 127.0.0.1 that can be stopped and started
again on the same port (a receiver that is down: connection refused), answer
late (`delay_s`: a slow or hanging receiver), and tells which requests it holds
open. It verifies every request with `standardwebhooks` (the Standard Webhooks
reference implementation) when it arrives, as a receiver would, and keeps, per
webhook-id, the first arrival, the body's hash and how often it came.

`Webhooks` registers the endpoint of the workload's tenant (events `*`) before
the workload's setup, so every notification of the run is expected; after each
scenario it checks that every notification the database implies (each job of
the tenant that ended succeeded or failed, each history row of the tenant) has
a delivery that succeeded and reached the receiver, that nothing else did, that
every request verifies and that the requests with one webhook-id carry one body;
it reports expected / received / duplicates and the delivery latency (first
arrival minus the body's `timestamp`) of the notifications new since the last check.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

# Retries for the chaos stack: a receiver down for a minute is caught up within the scenario's bound
# (the default schedule waits up to a day between attempts).
RETRY_SCHEDULE = "2,4,8,15,30,30,30,30,30,30"


def _quiet_server(handler) -> type[ThreadingHTTPServer]:
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

        def handle_error(self, request, client_address):  # a caller that gave up (timeout, killed worker)
            pass

    return Server


@dataclass
class Seen:
    """What a receiver got for one webhook-id."""

    first_at: float  # time.time() of the first arrival
    body_hash: bytes
    type: str
    event_at: float | None  # the body's `timestamp`, as a POSIX time
    count: int = 1
    arrivals: list[float] = field(default_factory=list)  # every arrival (kept only while `track` lists the id)


class Receiver:
    """An HTTP receiver of webhooks that can go down, come back on the same port, and answer late."""

    def __init__(self, name: str, port: int):
        self.name = name
        self.port = port
        self.secret: str | None = None  # the endpoint's, once registered
        self.delay_s = 0.0  # how long each request is held before its 200
        self.lock = threading.Lock()
        self.seen: dict[str, Seen] = {}
        self.requests = 0
        self.bad_signatures: list[str] = []  # "webhook-id: why", first few
        self.bad_signature_count = 0
        self.other_bodies: list[str] = []  # webhook-ids that came with another body than their first
        self.in_flight: dict[int, tuple[str, float]] = {}  # request thread -> (webhook-id, arrival)
        self.track: set[str] = set()  # webhook-ids whose every arrival is kept
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{self.name}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        from standardwebhooks import Webhook

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                headers = {k.lower(): v for k, v in self.headers.items()}
                msg_id = headers.get("webhook-id", "")
                problem = None
                payload: dict = {}
                try:
                    if receiver.secret is None:
                        raise ValueError("no secret yet")
                    payload = Webhook(receiver.secret).verify(body, headers)
                except Exception as e:  # noqa: BLE001 - any failure to verify is recorded
                    problem = f"{type(e).__name__}: {e}"
                receiver._record(msg_id, body, payload, at, problem)
                delay = receiver.delay_s
                me = threading.get_ident()
                with receiver.lock:
                    receiver.in_flight[me] = (msg_id, at)
                try:
                    if delay:
                        time.sleep(delay)
                    with contextlib.suppress(OSError):
                        self.send_response(200)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                finally:
                    with receiver.lock:
                        receiver.in_flight.pop(me, None)

            def log_message(self, *_):
                pass

        server = _quiet_server(Handler)(("127.0.0.1", self.port), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
                                        name=f"receiver-{self.name}")
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (new connections are refused); requests being answered finish on their own."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def _record(self, msg_id: str, body: bytes, payload: dict, at: float, problem: str | None) -> None:
        digest = hashlib.sha1(body).digest()  # noqa: S324 - equality of bodies, not security
        with self.lock:
            self.requests += 1
            if problem is not None:
                self.bad_signature_count += 1
                if len(self.bad_signatures) < 20:
                    self.bad_signatures.append(f"{msg_id or '(no webhook-id)'}: {problem}")
            seen = self.seen.get(msg_id)
            if seen is None:
                event_at = None
                with contextlib.suppress(Exception):
                    event_at = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")).timestamp()
                seen = self.seen[msg_id] = Seen(at, digest, str(payload.get("type")), event_at, 0)
            seen.count += 1
            if seen.body_hash != digest and len(self.other_bodies) < 1000:
                self.other_bodies.append(msg_id)
            if msg_id in self.track:
                seen.arrivals.append(at)

    def open_requests(self, min_age: float, max_age: float) -> list[str]:
        """Webhook-ids of requests held open now that arrived between min_age and max_age seconds ago."""
        now = time.time()
        with self.lock:
            return [i for i, at in self.in_flight.values() if min_age <= now - at <= max_age]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


@dataclass
class Figures:
    """A scenario's webhook figures (main endpoint)."""

    expected: int = 0  # notifications new since the last check
    received: int = 0  # ... that reached the receiver
    duplicates: int = 0  # requests since the last check that repeated a webhook-id already received
    p50_s: float | None = None  # delivery latency of those notifications (first arrival - body timestamp)
    p99_s: float | None = None
    redelivered: int = 0  # interrupted attempts (worker killed mid-request) received again with their id
    retried: int = 0  # deliveries of those notifications that took more than one attempt
    max_attempts: int = 0
    # A scenario with phases (webhook-receiver-hangs): the p99 latency of the notifications whose event
    # happened in each phase, by phase name.
    phase_p99_s: dict[str, float | None] = field(default_factory=dict)


class Webhooks:
    """The run's webhook endpoint(s), their receivers, and the checks after each scenario."""

    def __init__(self, api_url: str, token: str, tenant: str, pick_port, log):
        self.api_url = api_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.tenant = tenant
        self.pick_port = pick_port
        self.log = log
        self.receiver = Receiver("main", pick_port())
        self.endpoint_id = ""
        self.extra: dict[str, Receiver] = {}  # endpoint id -> receiver (a second endpoint of a scenario)
        self.checked: set[str] = set()  # webhook-ids counted in an earlier scenario
        self._received_before: set[str] = set()  # webhook-ids the receiver had at the last check
        self._requests_before = 0
        # Attempts in flight when the webhook worker was killed: webhook-id -> kill time.
        self.interrupted: dict[str, float] = {}
        self.interrupted_checked: set[str] = set()
        self.blind_kills = 0  # webhook worker kills that found no attempt in flight
        self.phases: dict[str, tuple[float, float]] = {}  # a fault's phases (name -> start, end), until checked

    # endpoints -------------------------------------------------------------------------------

    def register(self, receiver: Receiver, description: str) -> str:
        r = requests.post(f"{self.api_url}/webhook-endpoints", headers=self.headers, timeout=10,
                          json={"url": receiver.url, "events": ["*"], "description": description})
        if r.status_code != 201:
            raise RuntimeError(f"POST /webhook-endpoints answered {r.status_code}: {r.text[:300]}")
        endpoint = r.json()
        receiver.secret = endpoint["secret"]
        return endpoint["id"]

    def start(self) -> None:
        """The main receiver and its endpoint (before the workload's setup: every notification counts)."""
        self.receiver.start()
        self.endpoint_id = self.register(self.receiver, "chaos")
        self.log(f"webhook endpoint {self.endpoint_id} → {self.receiver.url} (events *)")

    def add_endpoint(self, name: str, delay_s: float = 0.0) -> Receiver:
        receiver = Receiver(name, self.pick_port())
        receiver.delay_s = delay_s
        receiver.start()
        endpoint_id = self.register(receiver, f"chaos {name}")
        self.extra[endpoint_id] = receiver
        return receiver

    def remove_extra_endpoints(self) -> None:
        for endpoint_id, receiver in list(self.extra.items()):
            with contextlib.suppress(requests.RequestException):
                requests.delete(f"{self.api_url}/webhook-endpoints/{endpoint_id}", headers=self.headers, timeout=10)
            receiver.stop()
            del self.extra[endpoint_id]

    def stop(self) -> None:
        self.receiver.stop()
        for receiver in self.extra.values():
            receiver.stop()

    # quiescence ------------------------------------------------------------------------------

    def pending_state(self, conn) -> tuple[bool, str]:
        """Every notification so far has a delivery, and none is pending (a retry wait counts as pending)."""
        from sqlalchemy import text

        row = conn.execute(text("""
            SELECT (SELECT count(*) FROM jobs WHERE tenant_id = :t AND status IN ('succeeded', 'failed'))
                 + (SELECT count(*) FROM history_events WHERE tenant_id = :t) AS notifications,
                   (SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = CAST(:e AS uuid)) AS deliveries,
                   (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
                   (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'
                       AND next_attempt_at > clock_timestamp()) AS waiting"""),
            {"t": self.tenant, "e": self.endpoint_id}).mappings().one()
        if row["deliveries"] < row["notifications"]:
            return False, f"webhooks: {row['notifications'] - row['deliveries']} notifications without a delivery"
        if row["pending"]:
            return False, f"webhooks: {row['pending']} deliveries pending ({row['waiting']} waiting for a retry)"
        return True, "quiescent"

    # checks ----------------------------------------------------------------------------------

    def expected(self, conn) -> dict[str, str]:
        """Every notification of the tenant the database implies: webhook-id -> type."""
        from sqlalchemy import text

        from app.domain import webhooks as rules

        out: dict[str, str] = {}
        for job_id, status in conn.execute(text(
                "SELECT id::text, status FROM jobs WHERE tenant_id = :t AND status IN ('succeeded', 'failed')"),
                {"t": self.tenant}):
            out[rules.webhook_id("job", job_id)] = f"job.{status}"
        for event_id, wallet_id, event_type in conn.execute(text(
                "SELECT event_id::text, wallet_id::text, event_type FROM history_events WHERE tenant_id = :t"),
                {"t": self.tenant}):
            out[rules.webhook_id("event", event_id, wallet_id)] = rules.notification_type(event_type)
        return out

    def check(self, conn, violations: list[str], figures: Figures) -> None:
        from sqlalchemy import text

        expected = self.expected(conn)
        deliveries: dict[str, tuple[str, int, str]] = {}
        for wid, status, attempts, error in conn.execute(text(
                "SELECT webhook_id, status, attempts, last_error FROM webhook_deliveries"
                " WHERE endpoint_id = CAST(:e AS uuid)"), {"e": self.endpoint_id}):
            deliveries[wid] = (status, attempts, error)
        rx = self.receiver
        with rx.lock:
            seen = dict(rx.seen)
            requests_now = rx.requests
            bad = list(rx.bad_signatures), rx.bad_signature_count
            other_bodies = sorted(set(rx.other_bodies))
            arrivals = {wid: list(s.arrivals) for wid, s in seen.items() if s.arrivals}

        def examples(ids) -> str:
            ids = sorted(ids)
            return ", ".join(ids[:3]) + (" …" if len(ids) > 3 else "")

        new = set(expected) - self.checked
        no_delivery = set(expected) - set(deliveries)
        if no_delivery:
            violations.append(f"webhooks: {len(no_delivery)} notifications have no delivery (lost before the "
                              f"dispatcher), e.g. {examples(no_delivery)}")
        unfinished = [wid for wid in expected if wid in deliveries and deliveries[wid][0] != "succeeded"]
        if unfinished:
            wid = unfinished[0]
            violations.append(f"webhooks: {len(unfinished)} deliveries not succeeded, e.g. {wid} "
                              f"{deliveries[wid][0]} after {deliveries[wid][1]} attempts ({deliveries[wid][2]})")
        not_received = set(expected) - set(seen)
        if not_received:
            violations.append(f"webhooks: {len(not_received)} notifications never reached the receiver, "
                              f"e.g. {examples(not_received)}")
        unexpected = set(deliveries) - set(expected)
        if unexpected:
            violations.append(f"webhooks: {len(unexpected)} deliveries of no job outcome or history row of the "
                              f"tenant, e.g. {examples(unexpected)}")
        stray = set(seen) - set(expected)
        if stray:
            violations.append(f"webhooks: the receiver got {len(stray)} webhook-ids no notification has, "
                              f"e.g. {examples(stray)}")
        wrong_type = [wid for wid in set(seen) & set(expected) if seen[wid].type != expected[wid]]
        if wrong_type:
            wid = wrong_type[0]
            violations.append(f"webhooks: {len(wrong_type)} notifications of the wrong type, e.g. {wid} "
                              f"{seen[wid].type}, expected {expected[wid]}")
        if bad[1]:
            violations.append(f"webhooks: {bad[1]} requests do not verify (standardwebhooks), e.g. {bad[0][:2]}")
        if other_bodies:
            violations.append(f"webhooks: {len(other_bodies)} webhook-ids came with different bodies, "
                              f"e.g. {examples(other_bodies)}")

        # The attempts a killed webhook worker had in flight: each received again, with the same id.
        for wid, killed_at in sorted(self.interrupted.items()):
            if wid in self.interrupted_checked:
                continue
            self.interrupted_checked.add(wid)
            again = [at for at in arrivals.get(wid, []) if at > killed_at]
            if again:
                figures.redelivered += 1
            else:
                violations.append(f"webhooks: {wid} was in flight when the worker was killed and never arrived "
                                  f"again (delivery {deliveries.get(wid, ('none',))[0]})")

        figures.expected = len(new)
        figures.received = len(new & set(seen))
        figures.duplicates = (requests_now - self._requests_before) - len(set(seen) - self._received_before)
        timed = [(seen[wid].event_at, seen[wid].first_at - seen[wid].event_at) for wid in new & set(seen)
                 if seen[wid].event_at is not None]
        latencies = [lat for _, lat in timed]
        figures.p50_s, figures.p99_s = pct(latencies, 50), pct(latencies, 99)
        for name, (start, end) in self.phases.items():
            figures.phase_p99_s[name] = pct([lat for at, lat in timed if start <= at < end], 99)
        self.phases = {}
        attempts = [deliveries[wid][1] for wid in new if wid in deliveries]
        figures.retried = sum(1 for a in attempts if a > 1)
        figures.max_attempts = max(attempts, default=0)
        self.checked |= set(expected)
        self._received_before = set(seen)
        self._requests_before = requests_now

    def check_extra(self, conn, violations: list[str]) -> list[str]:
        """A scenario's second endpoint: each of its deliveries succeeded and reached it, signed, one body per id."""
        from sqlalchemy import text

        notes = []
        for endpoint_id, rx in self.extra.items():
            rows = conn.execute(text("SELECT webhook_id, status FROM webhook_deliveries"
                                     " WHERE endpoint_id = CAST(:e AS uuid)"), {"e": endpoint_id}).all()
            with rx.lock:
                seen = dict(rx.seen)
                bad = rx.bad_signature_count, list(rx.bad_signatures)
                other = len(set(rx.other_bodies))
                total = rx.requests
            failed = [wid for wid, status in rows if status != "succeeded"]
            missing = [wid for wid, _ in rows if wid not in seen]
            if failed:
                violations.append(f"webhooks ({rx.name}): {len(failed)} of {len(rows)} deliveries not succeeded")
            if missing:
                violations.append(f"webhooks ({rx.name}): {len(missing)} of {len(rows)} deliveries never arrived")
            if bad[0]:
                violations.append(f"webhooks ({rx.name}): {bad[0]} requests do not verify, e.g. {bad[1][:2]}")
            if other:
                violations.append(f"webhooks ({rx.name}): {other} webhook-ids came with different bodies")
            notes.append(f"{rx.name}: {len(rows)} deliveries, {len(seen)} received in {total} requests")
        return notes

