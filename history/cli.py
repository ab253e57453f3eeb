"""`python -m app.cli history ...`: rebuild, compare, status and dead letters of the read model."""
from __future__ import annotations

import sys
from datetime import datetime, timezone

import click


@click.group()
def history() -> None:
    """The history read model."""


@history.command()
@click.option("--progress/--no-progress", default=True, help="Show a progress bar (tqdm).")
def rebuild(progress: bool) -> None:
    """Replace the read model with a replay of the event journal (the outbox)."""
    from tqdm import tqdm

    from app.adapters.db import engine
    from history import ops

    with engine().connect() as conn:
        total = ops.journal_size(conn)
    with tqdm(total=total, unit="event", disable=not progress, file=sys.stderr) as bar:
        result = ops.rebuild(progress=bar.update)
    for outbox_id, error in result.skipped:
        click.echo(f"skipped outbox event {outbox_id}: {error}", err=True)
    click.echo(f"rebuilt history from {result.events} events: {result.rows} rows")


@history.command()
@click.option("--grace", type=float, default=0.0, show_default=True,
              help="Ignore changes younger than this many seconds (still on their way through Kafka).")
def compare(grace: float) -> None:
    """Compare the read model with the event journal and the ledger; exit 1 on any difference."""
    from history import ops

    differences = ops.compare(grace_seconds=grace)
    for difference in differences:
        click.echo(str(difference))
    if differences:
        click.echo(f"{len(differences)} differences", err=True)
        sys.exit(1)
    click.echo("no differences: history matches the event journal and the ledger")


@history.command()
@click.option("--group", default=None, help="Consumer group (default: KAFKA_GROUP_ID).")
def status(group: str | None) -> None:
    """Outbox backlog and the history consumer group's lag per partition."""
    from app.config import settings
    from history import ops

    s = settings()
    backlog = ops.outbox_backlog()
    age = ""
    if backlog.oldest_created_at is not None:
        age = f", oldest {(datetime.now(timezone.utc) - backlog.oldest_created_at).total_seconds():.1f}s old"
    click.echo(f"outbox: {backlog.unpublished} unpublished{age}")
    lags = ops.consumer_lag(group)
    group = group or s.kafka_group_id
    if lags is None:
        click.echo(f"topic {s.kafka_topic}: not found")
        return
    click.echo(f"topic {s.kafka_topic}, group {group}:")
    click.echo(f"  {'partition':>9} {'committed':>10} {'end':>10} {'lag':>8}")
    for p in lags:
        committed = "-" if p.committed is None else str(p.committed)
        click.echo(f"  {p.partition:>9} {committed:>10} {p.end:>10} {p.lag:>8}")
    click.echo(f"  {'total':>9} {'':>10} {'':>10} {sum(p.lag for p in lags):>8}")


@history.command("dead-letters")
@click.option("--limit", type=int, default=50, show_default=True)
def dead_letters(limit: int) -> None:
    """The messages the history worker could not process, newest first."""
    from sqlalchemy import text

    from app.adapters.db import engine

    with engine().connect() as conn:
        rows = conn.execute(text(
            'SELECT topic, partition, "offset", key, error, created_at FROM history_dead_letters'
            " ORDER BY id DESC LIMIT :limit"), {"limit": limit}).all()
    for topic, partition, offset, key, error, created_at in rows:
        key_text = bytes(key).decode(errors="replace") if key is not None else "-"
        click.echo(f"{created_at:%Y-%m-%dT%H:%M:%SZ} {topic}[{partition}]@{offset} key={key_text}: {error}")
    if not rows:
        click.echo("no dead letters")
