"""A delivery connects to the address that was checked, whatever the name resolves to by then (DNS rebinding)."""
from __future__ import annotations

import pytest

from app.adapters import webhook_http
from app.domain.webhooks import UrlNotAllowed
from app.services import webhooks
from tests.webhook_receiver import start_receiver


def test_the_request_goes_to_the_checked_address_with_the_urls_host(monkeypatch):
    receiver = start_receiver()
    try:
        port = receiver.server.server_port
        # The name would resolve elsewhere now; the attempt still goes to the address it checked.
        answer = webhook_http.post(f"http://hooks.example.invalid:{port}/in?x=1", "127.0.0.1",
                                   {"webhook-id": "msg_1"}, b"{}", timeout_s=5)
        assert answer == webhook_http.Answer(200, None)
        (received,) = receiver.received
        assert received.headers["host"] == f"hooks.example.invalid:{port}" and received.path == "/in?x=1"
    finally:
        receiver.close()


def test_redirects_are_not_followed_and_count_as_a_failure():
    receiver = start_receiver()
    receiver.default_status = 302
    try:
        answer = webhook_http.post(receiver.url, "127.0.0.1", {}, b"{}", timeout_s=5)
        assert answer.status_code == 302 and answer.error == "HTTP 302" and len(receiver.received) == 1
    finally:
        receiver.close()


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt():
    receiver = start_receiver()
    receiver.hang_s = 2
    try:
        answer = webhook_http.post(receiver.url, "127.0.0.1", {}, b"{}", timeout_s=0.5)
        assert answer.status_code is None and "Timeout" in answer.error
    finally:
        receiver.close()


def test_every_address_of_the_name_is_checked_at_each_attempt(monkeypatch):
    from app.config import settings

    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "0")
    settings.cache_clear()
    try:
        monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["93.184.216.34"])
        assert webhooks.check_destination("https://hooks.example.com/x") == "93.184.216.34"
        # The same name now also resolves to a private address (rebinding): refused, not connected.
        monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["93.184.216.34", "10.0.0.7"])
        with pytest.raises(UrlNotAllowed):
            webhooks.check_destination("https://hooks.example.com/x")
        monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["169.254.169.254"])
        with pytest.raises(UrlNotAllowed):
            webhooks.check_destination("https://hooks.example.com/x")
    finally:
        monkeypatch.undo()
        settings.cache_clear()
