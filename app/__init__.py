"""The wallet application: domain rules, services, adapters and the HTTP API.

Importing this package must stay cheap and must not import Flask, so a Celery
worker that only needs the services does not load the web stack.
"""
