"""The Flower screenshot script's URL: the task list, with the basic-auth credentials quoted in it."""
from scripts.flower_screenshot import page_url


def test_the_url_carries_quoted_credentials():
    assert page_url("http://127.0.0.1:5555/", "admin:p@ss:word") == "http://admin:p%40ss%3Aword@127.0.0.1:5555/tasks"


def test_without_auth_the_url_is_plain():
    assert page_url("http://flower:5555", None) == "http://flower:5555/tasks"
