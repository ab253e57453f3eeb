"""Webhook rules: names, Standard Webhooks signatures (checked by the reference package), retries, addresses."""
from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from app.domain import webhooks as rules


@pytest.mark.parametrize("source,name", [("TRANSFER_IN", "wallet.transfer_in"), ("WALLET_FUNDED", "wallet.funded"),
                                         ("HOLD_EXPIRED", "wallet.hold_expired"), ("JOB_FAILED", "job.failed"),
                                         ("JOB_SUCCEEDED", "job.succeeded")])
def test_notification_names(source, name):
    assert rules.notification_type(source) == name


def test_signatures_verify_with_the_reference_implementation_and_both_secrets_sign_during_a_rotation():
    old, new = rules.new_secret(), rules.new_secret()
    body, msg_id, stamp = b'{"type":"wallet.funded","timestamp":"2026-11-28T00:00:00Z","data":{}}', "msg_1", int(time.time())
    now = datetime.now(UTC)
    signing = rules.signing_secrets(new, old, now + timedelta(hours=1), now)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
               "webhook-signature": rules.signature_header(signing, msg_id, stamp, body)}
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["type"] == "wallet.funded"
    assert rules.signing_secrets(new, old, now - timedelta(seconds=1), now) == [new]  # the overlap is over
    with pytest.raises(WebhookVerificationError):
        Webhook(rules.new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + b" ", headers)


def test_retries_follow_the_schedule_with_jitter_then_stop():
    schedule, rng = (5, 300, 1800), random.Random(7)
    waits = [rules.next_attempt_delay(schedule, n, rng) for n in (1, 2, 3)]
    assert all(0.8 * s <= w <= 1.2 * s for w, s in zip(waits, schedule, strict=True))
    assert rules.next_attempt_delay(schedule, 4, rng) is None
    assert rules.parse_schedule("5, 300,1800") == schedule
    with pytest.raises(ValueError):
        rules.parse_schedule("5,-1")


def test_an_endpoint_failing_for_five_days_is_disabled_and_a_success_resets_nothing_else():
    now = datetime(2026, 11, 28, tzinfo=UTC)
    assert rules.after_attempt(True, 9, (5,), now - timedelta(days=9), now) == rules.Outcome("succeeded", None, False)
    assert rules.after_attempt(False, 1, (5,), now - timedelta(days=4), now).status == "pending"
    gone = rules.after_attempt(False, 1, (5,), now - timedelta(days=5), now)
    assert gone.disable_endpoint and gone.status == "failed"


@pytest.mark.parametrize("address,private_ok,refused", [
    ("93.184.216.34", False, False), ("2606:2800:220:1::1", False, False),
    ("127.0.0.1", False, True), ("127.0.0.1", True, False), ("10.0.0.5", True, False), ("192.168.1.1", False, True),
    ("::1", False, True), ("100.64.0.1", False, True), ("::ffff:127.0.0.1", False, True),
    ("169.254.169.254", True, True), ("169.254.10.10", True, True), ("fd00:ec2::254", True, True),
    ("fe80::1", True, True), ("0.0.0.0", True, True), ("224.0.0.1", True, True)])
def test_addresses(address, private_ok, refused):
    assert (rules.address_refusal(address, private_ok) is not None) is refused


@pytest.mark.parametrize("url", ["ftp://x.com/", "http://", "http://u:p@x.com/", "x" * 10, "https://x.com:99999/",
                                 "https://" + "a" * 2050])
def test_urls_that_are_refused_before_any_lookup(url):
    with pytest.raises(rules.UrlNotAllowed):
        rules.parse_url(url)


def test_a_url_names_its_target():
    assert rules.parse_url("https://hooks.example.com/in?x=1") == rules.Target("https", "hooks.example.com", 443)
    assert rules.parse_url("http://[::1]:8080/") == rules.Target("http", "::1", 8080)
