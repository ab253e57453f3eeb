"""Job routes: what became of a command."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify

from app.api.context import current_tenant
from app.api.problems import ApiError
from app.services import queries

bp = Blueprint("jobs", __name__)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    try:
        uuid.UUID(job_id)
        job = queries.get_job(job_id, current_tenant())
    except ValueError:
        job = None
    if job is None:
        raise ApiError("JOB_NOT_FOUND", f"job {job_id} does not exist")
    response = jsonify(job)
    if job["status"] not in ("succeeded", "failed"):
        response.headers["Retry-After"] = "1"
    return response
