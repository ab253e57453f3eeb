"""Operator commands: `python -m app.cli <group> <command>` (e.g. `history rebuild`).

Command groups live with the code they operate and are listed in COMMANDS as
"module:attribute"; a group is imported only when it is invoked (or listed in
--help), so adding one is a line here and a click group in its own module.
"""
from __future__ import annotations

import importlib

import click
from sqlalchemy.exc import OperationalError

from app.config import dev_env_file, use_env_file

COMMANDS: dict[str, str] = {
    "history": "history.cli:history",
    "audit": "app.ops_cli:audit_group",
    "keys": "app.ops_cli:keys_group",
    "jobs": "app.ops_cli:jobs_group",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Operator commands of the wallet system (configuration from the environment; unset URLs from a running
    `make dev` stack's .dev/env)."""


def main() -> None:
    # Unset URLs come from the running `make dev` stack, if there is one (it writes them to .dev/env).
    use_env_file(dev_env_file())
    try:
        code = cli(prog_name="python -m app.cli", standalone_mode=False)
    except click.exceptions.Abort:
        raise SystemExit(1) from None
    except click.ClickException as e:
        e.show()
        raise SystemExit(e.exit_code) from None
    except OperationalError as e:  # the database refused or is away: say so, without a traceback
        first = str(e.orig or e).strip().splitlines()[0]
        click.echo(f"error: cannot reach the database ({first}); is the stack running? "
                   "DATABASE_URL, or a running `make dev` (.dev/env), says where it is", err=True)
        raise SystemExit(2) from None
    if isinstance(code, int):  # a command that ended with ctx.exit(code)
        raise SystemExit(code)


if __name__ == "__main__":
    main()
