"""The Celery app, configured from `celeryconfig`: the API publishes through it, the workers (`tasks/`) run on it.

It lives here, below both, so that publishing a command never imports the
task modules (and through them the executor).
"""
from celery import Celery

celery_app = Celery("wallet")
celery_app.config_from_object("celeryconfig")
