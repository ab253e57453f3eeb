"""Alembic environment: migrates the database named by DATABASE_URL."""
from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from app.adapters.tables import metadata
from app.config import settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = [metadata]
try:  # the read side's tables live with the history service
    from history.tables import metadata as history_metadata
    target_metadata.append(history_metadata)
except ImportError:  # pragma: no cover - before the history service exists
    pass


def run_migrations_offline() -> None:
    context.configure(url=settings().database_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = create_engine(settings().database_url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        # One migrator at a time: several processes may start together.
        connection.exec_driver_sql("SELECT pg_advisory_lock(72707269)")
        # The lock is the session's; ending the transaction it began lets Alembic begin its own, which a
        # migration building indexes CONCURRENTLY (0016) can leave for its autocommit_block().
        connection.commit()
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        connection.exec_driver_sql("SELECT pg_advisory_unlock(72707269)")
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
