"""Webhooks: endpoints of a tenant, deliveries fanned out from the event stream, one attempt at a time.

- Endpoints are managed synchronously by the API (not commands): register
  (the secret is shown once), list, read, delete, rotate the secret (the
  previous one signs too for 24 h).
- `fan_out` is the webhook dispatcher's batch: Kafka events (history events and
  the job outcomes the database adds to the outbox) become deliveries, one per
  notification and subscribed endpoint, inserted once however often Kafka
  delivers the event. Nothing here runs inside a command or a request: a slow
  or dead receiver never slows down or fails a command.
- `attempt` is one Celery task run: it leases the delivery, checks the address
  it is about to call, POSTs the signed body, and records the attempt, the
  delivery's next attempt (or its end) and the endpoint's failure streak in one
  transaction.
- Deliveries to an endpoint whose last attempt failed (it may hang for the
  whole 10 s timeout) go to the queue `webhooks-failing`, served by a worker of
  their own, so a receiver that hangs never takes the threads that deliver to
  every healthy endpoint; its first success brings it back to `webhooks`. Every
  retry goes to `webhooks-failing` too: `webhooks` carries first attempts.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timezone

from sqlalchemy import text

from app.adapters import command_queue, webhook_http
from app.adapters.db import engine, run_sql
from app.config import settings
from app.domain import webhooks as rules
from app.observability import metrics
from app.services import cursors
from app.services.views import job_view, timestamp
from history.projector import KNOWN_TYPES, InvalidEvent, project
from history.queries import event_view

log = logging.getLogger(__name__)

NOTIFICATION_TYPES = frozenset({*rules.JOB_NOTIFICATIONS.values(), *(rules.notification_type(t) for t in KNOWN_TYPES)})
SELF_SCHEDULED_RETRY_S = 300  # a retry due sooner is published by the attempt itself, with a countdown
# Attempts of one endpoint at once on the `webhooks` queue (half the worker's 16 threads). Counted without a lock
# per endpoint (which would serialize every attempt of a busy one): leases taken at the same instant may exceed
# it by one or two.
MAIN_SHARE = 8
# An endpoint at its share whose oldest attempt in flight started this long ago is slow (it may hang until the
# 10 s timeout): its next deliveries go to `webhooks-failing`. An attempt at one at its share but fast waits
# for a free place (polling, BUSY_POLL_S doubling to BUSY_POLL_MAX_S, at most BUSY_WAIT_MAX_S).
SLOW_ATTEMPT_S = 2.0
BUSY_POLL_S, BUSY_POLL_MAX_S, BUSY_WAIT_MAX_S = 0.02, 0.2, 10.0

_ENDPOINT_COLUMNS = "id::text AS id, url, events, description, status, created_at"
_DELIVERY_COLUMNS = ("id::text AS id, endpoint_id::text AS endpoint_id, webhook_id, event_type, status, attempts,"
                     " last_status_code, last_error, next_attempt_at, created_at")


class EndpointNotFound(LookupError):
    pass


class DeliveryNotFound(LookupError):
    pass



def endpoint_view(row, secret: str | None = None) -> dict:
    view = {"id": row["id"], "url": row["url"], "events": list(row["events"]), "description": row["description"],
            "status": row["status"], "created_at": timestamp(row["created_at"])}
    if secret is not None:
        view["secret"] = secret
    return view


def delivery_view(row) -> dict:
    return {"id": row["id"], "endpoint_id": row["endpoint_id"], "webhook_id": row["webhook_id"],
            "event_type": row["event_type"], "status": row["status"], "attempts": row["attempts"],
            "last_status_code": row["last_status_code"], "last_error": row["last_error"],
            "next_attempt_at": timestamp(row["next_attempt_at"]) if row["status"] == "pending" else None,
            "created_at": timestamp(row["created_at"])}


def check_destination(url: str) -> str:
    """The address a delivery to `url` may connect to now; rules.UrlNotAllowed when there is none."""
    target = rules.parse_url(url)
    try:
        addresses = webhook_http.resolve(target.host, target.port)
    except (OSError, UnicodeError) as e:  # UnicodeError: not a name IDNA can encode (a label over 63, ...)
        raise rules.UrlNotAllowed(f"host {target.host[:100]} does not resolve") from e
    allow_private = settings().webhook_allow_private_urls
    for address in addresses:  # every address the name has: any of them may be the one used later
        reason = rules.address_refusal(address, allow_private)
        if reason is not None:
            raise rules.UrlNotAllowed(f"host {target.host} resolves to {reason}")
    return addresses[0]


def register(tenant_id: str, url: str, events: list[str], description: str | None) -> dict:
    check_destination(url)
    secret = rules.new_secret()
    with engine().begin() as conn:
        row = conn.execute(text(f"""
            INSERT INTO webhook_endpoints (id, tenant_id, url, events, description, secret)
            VALUES (:id, :tenant, :url, :events, :description, :secret) RETURNING {_ENDPOINT_COLUMNS}
        """), {"id": str(uuid.uuid4()), "tenant": tenant_id, "url": url, "events": sorted(set(events)),
               "description": description, "secret": secret}).mappings().one()
    return endpoint_view(row, secret)


def _tenant_clause(tenant_id: str | None) -> str:
    return "" if tenant_id is None else " AND tenant_id = :tenant"


def list_endpoints(tenant_id: str | None) -> dict:
    with engine().connect() as conn:
        rows = conn.execute(text(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE true"
                                 + _tenant_clause(tenant_id) + " ORDER BY created_at DESC, id DESC"),
                            {"tenant": tenant_id}).mappings().all()
    return {"items": [endpoint_view(r) for r in rows], "next_cursor": None}


def get_endpoint(endpoint_id: str, tenant_id: str | None) -> dict:
    with engine().connect() as conn:
        row = conn.execute(text(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = CAST(:id AS uuid)"
                                + _tenant_clause(tenant_id)), {"id": endpoint_id, "tenant": tenant_id}).mappings().first()
    if row is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint_view(row)


def delete_endpoint(endpoint_id: str, tenant_id: str | None) -> None:
    with engine().begin() as conn:
        deleted = conn.execute(text("DELETE FROM webhook_endpoints WHERE id = CAST(:id AS uuid)"
                                    + _tenant_clause(tenant_id)), {"id": endpoint_id, "tenant": tenant_id}).rowcount
    if not deleted:
        raise EndpointNotFound(endpoint_id)


def rotate_secret(endpoint_id: str, tenant_id: str | None) -> dict:
    """A new secret; the current one keeps signing (as well) for 24 h, so receivers can switch over."""
    secret = rules.new_secret()
    with engine().begin() as conn:
        row = conn.execute(text(f"""
            UPDATE webhook_endpoints
               SET previous_secret = secret, previous_secret_expires_at = now() + make_interval(secs => :overlap),
                   secret = :secret, updated_at = now()
             WHERE id = CAST(:id AS uuid){_tenant_clause(tenant_id)} RETURNING {_ENDPOINT_COLUMNS}
        """), {"id": endpoint_id, "tenant": tenant_id, "secret": secret,
               "overlap": rules.ROTATION_OVERLAP.total_seconds()}).mappings().first()
    if row is None:
        raise EndpointNotFound(endpoint_id)
    return endpoint_view(row, secret)


def list_deliveries(endpoint_id: str, tenant_id: str | None, status: str | None, limit: int,
                    cursor: str | None) -> dict:
    get_endpoint(endpoint_id, tenant_id)
    params: dict = {"endpoint": endpoint_id, "status": status, "limit": limit + 1}
    after = ""
    if cursor:
        params["c_at"], params["c_id"] = cursors.WEBHOOK_DELIVERIES.decode(cursor)
        after = " AND (created_at, id) < (:c_at, CAST(:c_id AS uuid))"
    with engine().connect() as conn:
        rows = conn.execute(text(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = CAST(:endpoint AS uuid)"
            + ("" if status is None else " AND status = :status") + after
            + " ORDER BY created_at DESC, id DESC LIMIT :limit"), params).mappings().all()
    items = rows[:limit]
    next_cursor = cursors.WEBHOOK_DELIVERIES.encode(items[-1]["created_at"], items[-1]["id"]) if len(rows) > limit else None
    return {"items": [delivery_view(r) for r in items], "next_cursor": next_cursor}


def list_attempts(delivery_id: str, tenant_id: str | None) -> dict:
    """Every attempt at a delivery, oldest first: when, how long, the answer or the error."""
    with engine().connect() as conn:
        found = conn.execute(text("SELECT 1 FROM webhook_deliveries WHERE id = CAST(:id AS uuid)"
                                  + _tenant_clause(tenant_id)), {"id": delivery_id, "tenant": tenant_id}).first()
        if found is None:
            raise DeliveryNotFound(delivery_id)
        rows = conn.execute(text("SELECT attempt, started_at, duration_ms, status_code, error FROM webhook_attempts"
                                 " WHERE delivery_id = CAST(:id AS uuid) ORDER BY attempt"),
                            {"id": delivery_id}).mappings().all()
    return {"items": [{"attempt": r["attempt"], "started_at": timestamp(r["started_at"]),
                       "duration_ms": r["duration_ms"], "status_code": r["status_code"], "error": r["error"]}
                      for r in rows], "next_cursor": None}


def retry_delivery(delivery_id: str, tenant_id: str | None) -> dict:
    """Deliver again now, with the same webhook-id (also a delivery that succeeded or failed for good)."""
    with engine().begin() as conn:
        row = conn.execute(text(f"""
            UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), enqueued_at = now(),
                   completed_at = NULL, updated_at = now()
             WHERE id = CAST(:id AS uuid){_tenant_clause(tenant_id)} RETURNING {_DELIVERY_COLUMNS}
        """), {"id": delivery_id, "tenant": tenant_id}).mappings().first()
    if row is None:
        raise DeliveryNotFound(delivery_id)
    command_queue.enqueue_delivery(row["id"])
    return delivery_view(row)


# -- fan-out: the webhook dispatcher's batch -------------------------------------------------------------------


def _notifications(messages: list) -> tuple[list[dict], list[dict]]:
    """Wallet notifications (with their data) and job outcomes (data read later) of a batch of Kafka records."""
    wallet, jobs = [], []
    for message in messages:
        try:
            event = json.loads(message.value)
            event_type = event.get("event_type") if isinstance(event, dict) else None
            if event_type in rules.JOB_NOTIFICATIONS:
                jobs.append({"tenant_id": event["tenant_id"], "job_id": event["job_id"],
                             "type": rules.JOB_NOTIFICATIONS[event_type]})
                continue
            rows = project(event)
        except (TypeError, ValueError, KeyError, InvalidEvent):
            continue  # not an event; the history worker records it as a dead letter
        for row in rows:
            wallet.append({"tenant_id": row["tenant_id"], "type": rules.notification_type(row["event_type"]),
                           "webhook_id": rules.webhook_id("event", row["event_id"], row["wallet_id"]),
                           "body": {"type": rules.notification_type(row["event_type"]),
                                    "timestamp": timestamp(row["occurred_at"]), "data": event_view(row)}})
    return wallet, jobs


def fan_out(messages: list) -> tuple[int, int]:
    """Deliveries for a batch of events, in one transaction; returns (new, already there). Publishes the new."""
    wallet, jobs = _notifications(messages)
    tenants = sorted({n["tenant_id"] for n in wallet + jobs})
    if not tenants:
        return 0, 0
    with engine().begin() as conn:
        endpoints = run_sql(conn, "SELECT id::text AS id, tenant_id, events, failing_since IS NOT NULL AS failing"
                                  " FROM webhook_endpoints WHERE status = 'enabled' AND tenant_id = ANY(:tenants)",
                            {"tenants": tenants}).mappings().all()
        by_tenant: dict[str, list] = {}
        for e in endpoints:
            by_tenant.setdefault(e["tenant_id"], []).append(e)
        wanted_jobs = [j for j in jobs if any(rules.subscribed(e["events"], j["type"])
                                              for e in by_tenant.get(j["tenant_id"], ()))]
        if wanted_jobs:
            rows = run_sql(conn, "SELECT * FROM jobs j WHERE j.id = ANY(CAST(:ids AS uuid[]))",
                           {"ids": [j["job_id"] for j in wanted_jobs]}).mappings().all()
            final = {str(r["id"]): r for r in rows}
            for j in wanted_jobs:
                row = final.get(j["job_id"])
                if row is not None:
                    wallet.append({"tenant_id": j["tenant_id"], "type": j["type"],
                                   "webhook_id": rules.webhook_id("job", j["job_id"]),
                                   "body": {"type": j["type"], "timestamp": timestamp(row["completed_at"]),
                                            "data": job_view(row)}})
        deliveries = [{"id": str(uuid.uuid4()), "endpoint_id": e["id"], "tenant_id": n["tenant_id"],
                       "webhook_id": n["webhook_id"], "event_type": n["type"], "payload": n["body"]}
                      for n in wallet for e in by_tenant.get(n["tenant_id"], ()) if rules.subscribed(e["events"], n["type"])]
        if not deliveries:
            return 0, 0
        new = run_sql(conn, """
            INSERT INTO webhook_deliveries (id, endpoint_id, tenant_id, webhook_id, event_type, payload)
            SELECT d.id, d.endpoint_id, d.tenant_id, d.webhook_id, d.event_type, d.payload
              FROM json_populate_recordset(NULL::webhook_deliveries, CAST(:rows AS json)) AS d
            ON CONFLICT (endpoint_id, webhook_id) DO NOTHING RETURNING id::text, endpoint_id::text
        """, {"rows": json.dumps(deliveries)}).all()
    failing = {e["id"] for e in endpoints if e["failing"]}
    for delivery_id, endpoint_id in new:
        command_queue.enqueue_delivery(delivery_id, failing=endpoint_id in failing)
    metrics.shared().inc("wallet_webhook_deliveries_created_total", amount=len(new)).send()
    return len(new), len(deliveries) - len(new)


# -- one attempt ---------------------------------------------------------------------------------------------


# The lease and the record of an attempt commit without waiting for the WAL flush (synchronous_commit off, for
# their transaction only, set in the statement: no extra round trip). One lost in a PostgreSQL crash (the last
# few milliseconds) only means the delivery is attempted again, with the same webhook-id: at least once allows
# it. Waiting for the flush twice per attempt made WAL flushes the webhook worker's bottleneck under load.

# Due and not held by another attempt. The lease outlives any attempt (10 s per phase); a worker killed
# mid-attempt frees its deliveries when their leases run out (WEBHOOK_LEASE_S). On the `webhooks` queue an
# endpoint gets at most MAIN_SHARE attempts at once, and none once an attempt has failed, so a receiver that
# starts to hang holds at most MAIN_SHARE of the healthy threads (see _HELD_BACK for the others).
_LEASE = """
    UPDATE webhook_deliveries d SET lease_until = now() + make_interval(secs => :lease_s), leased_by = :worker,
           updated_at = now()
      FROM webhook_endpoints e, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE d.id = CAST(:id AS uuid) AND e.id = d.endpoint_id AND d.status = 'pending'
       AND d.next_attempt_at <= now() + interval '2 seconds'  -- a countdown timed by the worker's clock
       AND (d.lease_until IS NULL OR d.lease_until < now())
       AND (:failing_queue OR (e.failing_since IS NULL
            AND (SELECT count(*) FROM webhook_deliveries x
                  WHERE x.endpoint_id = d.endpoint_id AND x.lease_until > now()) < :share))
    RETURNING d.id::text AS id, d.endpoint_id::text AS endpoint_id, d.webhook_id, d.event_type,
              d.payload::text AS body,
              d.attempts, d.created_at, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at,
              e.status AS endpoint_status, e.failing_since, now() AS now
"""

# Refused on `webhooks` although due and free. To `webhooks-failing` if its endpoint is failing or slow (at its
# share with an attempt older than SLOW_ATTEMPT_S): it would hold healthy threads. Otherwise its endpoint is
# merely busy, and it waits for a place on `webhooks` (in the thread: a Celery retry per poll would spend the CPU
# a backlog needs): on `webhooks-failing` it would queue behind the attempts of hanging receivers.
_HELD_BACK = """
    UPDATE webhook_deliveries d SET enqueued_at = now(), updated_at = now()
      FROM webhook_endpoints e
     WHERE d.id = CAST(:id AS uuid) AND e.id = d.endpoint_id AND d.status = 'pending'
       AND d.next_attempt_at <= now() + interval '2 seconds' AND (d.lease_until IS NULL OR d.lease_until < now())
    RETURNING e.failing_since IS NOT NULL
              OR coalesce((SELECT min(x.lease_until) FROM webhook_deliveries x
                            WHERE x.endpoint_id = d.endpoint_id AND x.lease_until > now())
                          < now() + make_interval(secs => :lease_s - :slow_s), false) AS slow
"""

_RECORD = """
    WITH attempt AS (
        INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error)
        VALUES (CAST(:id AS uuid), :attempt, :started_at, :duration_ms, :status_code, :error)
        ON CONFLICT (delivery_id, attempt) DO NOTHING
    ), endpoint AS (  -- only when its state changes: a healthy endpoint's attempts never queue on its row
        UPDATE webhook_endpoints
           SET failing_since = CASE WHEN :succeeded THEN NULL ELSE coalesce(failing_since, :started_at) END,
               status = CASE WHEN :disable THEN 'disabled' ELSE status END,
               updated_at = now()
         WHERE id = CAST(:endpoint AS uuid) AND :touch_endpoint
    ), abandoned AS (
        UPDATE webhook_deliveries
           SET status = 'failed', last_error = 'endpoint disabled after 5 days of failures', completed_at = now(),
               lease_until = NULL, updated_at = now()
         WHERE :disable AND endpoint_id = CAST(:endpoint AS uuid) AND status = 'pending' AND id <> CAST(:id AS uuid)
    )
    UPDATE webhook_deliveries
       SET attempts = :attempt, status = :status, last_status_code = :status_code, last_error = :error,
           next_attempt_at = now() + make_interval(secs => :retry_in_s), lease_until = NULL,
           enqueued_at = CASE WHEN :self_scheduled THEN now() + make_interval(secs => :retry_in_s) END,
           completed_at = CASE WHEN :status = 'pending' THEN NULL ELSE now() END, updated_at = now()
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE id = CAST(:id AS uuid) AND attempts = :attempt - 1
"""


def _self_scheduled(outcome: rules.Outcome) -> bool:
    return outcome.status == "pending" and (outcome.retry_in_s or 0) <= SELF_SCHEDULED_RETRY_S


def attempt(delivery_id: str, failing_queue: bool = False, worker: str | None = None) -> rules.Outcome | None:
    """One attempt at a delivery if it is due and no other attempt holds it; its outcome (None: no attempt).

    A retry due within SELF_SCHEDULED_RETRY_S is for the caller to publish with that countdown; a later
    one is published by the `publish_due` sweep when it comes due.
    """
    lease = _lease(delivery_id, failing_queue, worker)
    if lease is None:
        return None  # not due, held by another attempt, final, or handed to webhooks-failing
    number = lease["attempts"] + 1
    started, clock = lease["now"], time.monotonic()
    if lease["endpoint_status"] != "enabled":
        answer = webhook_http.Answer(None, "endpoint disabled")
    else:
        answer = _send(lease, number)
    duration_ms = int((time.monotonic() - clock) * 1000)
    succeeded = answer.status_code is not None and 200 <= answer.status_code < 300
    failing_since = None if succeeded else (lease["failing_since"] or started)
    outcome = rules.after_attempt(succeeded, number, settings().webhook_retry_schedule, failing_since, started)
    if lease["endpoint_status"] != "enabled":
        outcome = rules.Outcome("failed", None, False)
    # The endpoint's row changes when an attempt fails, or succeeds after failures (and then its row is locked
    # first, then the delivery's, as deleting an endpoint locks them: in one statement's CTEs the order is
    # PostgreSQL's, and the two could deadlock).
    touch_endpoint = not succeeded or lease["failing_since"] is not None or outcome.disable_endpoint
    with engine().begin() as conn:
        if touch_endpoint:
            run_sql(conn, "SELECT 1 FROM webhook_endpoints WHERE id = CAST(:endpoint AS uuid) FOR NO KEY UPDATE",
                    {"endpoint": lease["endpoint_id"]})
        run_sql(conn, _RECORD, {
            "id": delivery_id, "endpoint": lease["endpoint_id"], "attempt": number, "started_at": started,
            "duration_ms": duration_ms, "status_code": answer.status_code, "error": answer.error,
            "succeeded": succeeded, "disable": outcome.disable_endpoint, "status": outcome.status,
            "touch_endpoint": touch_endpoint,
            "retry_in_s": outcome.retry_in_s or 0.0, "self_scheduled": _self_scheduled(outcome)})
    recorder = metrics.shared().inc("wallet_webhook_attempts_total", "succeeded" if succeeded else "failed") \
        .observe("wallet_webhook_attempt_seconds", duration_ms / 1000)
    if succeeded:
        occurred = datetime.fromisoformat(json.loads(lease["body"])["timestamp"].replace("Z", "+00:00"))
        recorder.observe("wallet_webhook_delivery_latency_seconds",
                         max(0.0, (datetime.now(timezone.utc) - occurred).total_seconds()), lease["event_type"])
    recorder.send()
    if outcome.disable_endpoint:
        log.warning("webhook endpoint %s disabled: every attempt failed for %s", lease["endpoint_id"],
                    rules.DISABLE_AFTER)
    log.info("webhook attempt %d of delivery %s: %s", number, delivery_id, answer.status_code or answer.error,
             extra={"delivery_id": delivery_id, "status": outcome.status, "duration_ms": duration_ms})
    return outcome


def _lease(delivery_id: str, failing_queue: bool, worker: str | None):
    """The delivery's lease (its row, with its endpoint's), or None if it is not this attempt's to make."""
    lease_s = settings().webhook_lease_s
    pause, deadline = BUSY_POLL_S, time.monotonic() + BUSY_WAIT_MAX_S
    while True:
        with engine().begin() as conn:
            lease = run_sql(conn, _LEASE, {"id": delivery_id, "lease_s": lease_s, "failing_queue": failing_queue,
                                           "share": MAIN_SHARE, "worker": worker}).mappings().first()
            if lease is not None or failing_queue:
                return lease
            slow = run_sql(conn, _HELD_BACK, {"id": delivery_id, "lease_s": lease_s,
                                              "slow_s": SLOW_ATTEMPT_S}).scalar()
        if slow is None:
            return None  # not due, held by another attempt, or final
        if slow or time.monotonic() > deadline:
            command_queue.enqueue_delivery(delivery_id, failing=True)
            return None
        time.sleep(pause)  # its endpoint is busy, and fast: a place frees soon
        pause = min(BUSY_POLL_MAX_S, pause * 2)


def retry_countdown(outcome: rules.Outcome | None) -> float | None:
    """Seconds after which the caller publishes the next attempt itself (None: the sweep does, or none)."""
    return outcome.retry_in_s if outcome is not None and _self_scheduled(outcome) else None


def _send(lease, number: int) -> webhook_http.Answer:
    try:
        address = check_destination(lease["url"])  # again at each attempt: DNS may have changed
    except rules.UrlNotAllowed as e:
        return webhook_http.Answer(None, f"refused: {e}")
    now: datetime = lease["now"]
    stamp = int(now.timestamp())
    body = lease["body"].encode()
    signing = rules.signing_secrets(lease["secret"], lease["previous_secret"], lease["previous_secret_expires_at"],
                                    now)
    headers = {"webhook-id": lease["webhook_id"], "webhook-timestamp": str(stamp),
               "webhook-signature": rules.signature_header(signing, lease["webhook_id"], stamp, body)}
    return webhook_http.post(lease["url"], address, headers, body, rules.ATTEMPT_TIMEOUT_S)


def publish_due(limit: int = 500) -> int:
    """Publish an attempt for every delivery due and not in flight (retries, lost publishes, killed workers)."""
    with engine().begin() as conn:
        rows = run_sql(conn, """
            WITH due AS (
                UPDATE webhook_deliveries SET enqueued_at = now()
                 WHERE id IN (SELECT id FROM webhook_deliveries
                               WHERE status = 'pending' AND next_attempt_at <= now()
                                 AND (lease_until IS NULL OR lease_until < now())
                                 AND (enqueued_at IS NULL OR enqueued_at < now() - make_interval(secs => :republish))
                               ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED)
                RETURNING id, endpoint_id, attempts)
            -- a retry goes to webhooks-failing: when a recovered endpoint's retries come due together,
            -- they queue behind no healthy endpoint's first attempts
            SELECT due.id::text AS id, (e.failing_since IS NOT NULL OR due.attempts > 0) AS failing
              FROM due JOIN webhook_endpoints e ON e.id = due.endpoint_id
        """, {"n": limit, "republish": settings().webhook_republish_after_s}).mappings().all()
    for row in rows:
        command_queue.enqueue_delivery(row["id"], failing=row["failing"])
    return len(rows)


def release_leases(worker: str, started_at: float) -> int:
    """Free the leases a previous run of this worker (same node name) held when it died, taken before this
    run started (POSIX time `started_at`), and publish those deliveries again now; their attempts were
    interrupted. Returns how many."""
    with engine().begin() as conn:
        released = run_sql(conn, """
            UPDATE webhook_deliveries SET lease_until = NULL, leased_by = NULL, enqueued_at = NULL, updated_at = now()
             WHERE lease_until > now() AND leased_by = :worker AND status = 'pending'
               AND lease_until - make_interval(secs => :lease_s) < to_timestamp(:started)
        """, {"worker": worker, "started": started_at, "lease_s": settings().webhook_lease_s}).rowcount
    if released:
        log.warning("webhook worker %s started again: %d interrupted attempts freed and published again",
                    worker, released)
        publish_due()
    return released


def pending_stats() -> dict:
    """Pending deliveries and the age of the oldest (for the metrics)."""
    with engine().connect() as conn:
        row = conn.execute(text("SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS oldest"
                                " FROM webhook_deliveries WHERE status = 'pending'")).mappings().one()
    return {"pending": row["n"], "oldest_pending_age_s": float(row["oldest"] or 0.0)}
