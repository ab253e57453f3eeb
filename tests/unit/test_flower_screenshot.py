"""The Flower screenshot script's URL: the task list, filtered, with the basic-auth credentials quoted in it."""
from scripts.flower_screenshot import page_url


def test_the_url_carries_the_search_and_quoted_credentials():
    url = page_url("http://127.0.0.1:5555/", "admin:p@ss:word", "wallet.transfer")
    assert url == "http://admin:p%40ss%3Aword@127.0.0.1:5555/tasks?search=wallet.transfer"


def test_without_auth_or_search_the_url_is_plain():
    assert page_url("http://flower:5555", None, "") == "http://flower:5555/tasks"
