"""Operator commands for the ledger audit, API keys and jobs (`python -m app.cli audit|keys|jobs ...`)."""
from __future__ import annotations

import json
import sys

import click

from app.services import api_keys, audit


@click.group()
def audit_group() -> None:
    """Verify the whole ledger."""


@audit_group.command("run")
@click.option("--record/--no-record", default=True, help="Keep the result in audit_runs.")
def audit_run(record: bool) -> None:
    """Run every ledger invariant check; print what is wrong and exit 1 if anything is."""
    report = audit.run_and_record() if record else audit.run_audit()
    for check in audit.CHECKS:
        rows = report.problems.get(check, [])
        click.echo(f"{'FAIL' if rows else 'ok  '}  {check}" + (f"  ({len(rows)} rows)" if rows else ""))
        for row in rows[:20]:
            click.echo(f"        {json.dumps(row, default=str)}")
    click.echo("ledger audit passed" if report.ok else "ledger audit FAILED")
    sys.exit(0 if report.ok else 1)


@audit_group.command("last")
def audit_last() -> None:
    """Show the last recorded audit (beat runs one every AUDIT_INTERVAL_S); exit 1 if it failed."""
    run = audit.last_run()
    if run is None:
        click.echo("no audit has run yet")
        sys.exit(2)
    click.echo(f"audit #{run['id']} finished {run['finished_at'].isoformat()}: {'passed' if run['ok'] else 'FAILED'}")
    if not run["ok"]:
        click.echo(json.dumps(run["problems"], indent=2, default=str))
    sys.exit(0 if run["ok"] else 1)


@click.group()
def keys_group() -> None:
    """Create, list and revoke API keys."""


@keys_group.command("create")
@click.option("--tenant", required=True, help="The tenant the key acts for.")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(api_keys.SCOPES),
              help="read, write or admin; repeat for several.")
@click.option("--name", default=None, help="A label to recognise the key by.")
def keys_create(tenant: str, scopes: tuple[str, ...], name: str | None) -> None:
    """Create a key and print its token (shown once; only its hash is stored)."""
    key_id, token = api_keys.create_key(tenant, list(scopes), name)
    click.echo(f"id     {key_id}\ntenant {tenant}\nscopes {'|'.join(sorted(set(scopes)))}\ntoken  {token}")


@keys_group.command("list")
def keys_list() -> None:
    """List keys (never their tokens)."""
    for k in api_keys.list_keys():
        state = f"revoked {k['revoked_at'].isoformat()}" if k["revoked_at"] else "active"
        click.echo(f"{k['id']}  {k['prefix']}…  tenant={k['tenant_id']}  scopes={'|'.join(k['scopes'])}  "
                   f"{state}  {k['name'] or ''}")


@keys_group.command("revoke")
@click.argument("key")
def keys_revoke(key: str) -> None:
    """Revoke a key by id or token prefix; it stops working at once."""
    count = api_keys.revoke_key(key)
    click.echo(f"revoked {count} key(s)")
    sys.exit(0 if count else 1)


@click.group()
def jobs_group() -> None:
    """Look at a command's job, or cancel it while it is queued."""


@jobs_group.command("show")
@click.argument("job_id")
def jobs_show(job_id: str) -> None:
    """Print the job (any tenant) as JSON; exit 1 when there is none."""
    from app.services import queries

    job = queries.get_job(job_id, None)
    if job is None:
        click.echo(f"no job {job_id}", err=True)
        sys.exit(1)
    click.echo(json.dumps(job, indent=2, default=str))


@jobs_group.command("cancel")
@click.argument("job_id")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued job (status `canceled`, its task revoked); exit 1 if it is running, final or unknown."""
    from app.domain.errors import JobNotCancelable
    from app.services import submission

    try:
        job = submission.cancel(job_id, None)
    except JobNotCancelable as e:
        click.echo(e.message, err=True)
        sys.exit(1)
    if job is None:
        click.echo(f"no job {job_id}", err=True)
        sys.exit(1)
    click.echo(f"job {job_id} canceled")
