"""Job routes: what became of a command."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify

from app.api.context import current_tenant
from app.api.problems import ApiError
from app.services import queries, submission
from app.domain.commands import FINAL_STATUSES

bp = Blueprint("jobs", __name__)


def _valid_id(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except ValueError:
        raise ApiError("JOB_NOT_FOUND", f"job {job_id} does not exist") from None


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    job = queries.get_job(_valid_id(job_id), current_tenant())
    if job is None:
        raise ApiError("JOB_NOT_FOUND", f"job {job_id} does not exist")
    response = jsonify(job)
    if job["status"] not in FINAL_STATUSES:
        response.headers["Retry-After"] = "1"
    return response


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    job = submission.cancel(_valid_id(job_id), current_tenant())
    if job is None:
        raise ApiError("JOB_NOT_FOUND", f"job {job_id} does not exist")
    return jsonify(job)
