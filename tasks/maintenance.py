"""Periodic tasks run by beat on the maintenance queue."""
from celery import shared_task

from app.services import maintenance


@shared_task(name="wallet.maintenance.requeue_stranded_jobs", ignore_result=True)
def requeue_stranded_jobs() -> int:
    return len(maintenance.requeue_stranded_jobs())


@shared_task(name="wallet.maintenance.purge_idempotency_keys", ignore_result=True)
def purge_idempotency_keys() -> int:
    return maintenance.purge_idempotency_keys()


@shared_task(name="wallet.maintenance.expire_holds", ignore_result=True)
def expire_holds() -> int:
    return maintenance.expire_holds()


@shared_task(name="wallet.maintenance.audit_ledger", ignore_result=True)
def audit_ledger() -> bool:
    from app.services import audit

    return audit.run_and_record().ok
