"""The `pocketfleet` command: serve this machine's control plane, or talk to a running one."""

from __future__ import annotations

import typer

from control_plane.cli import (
    account,
    backups,
    deploys,
    domains,
    fleet,
    instances,
    jobs,
    keys,
    local,
    nodes,
)
from instance_runtime import cli as runtime_cli

app = typer.Typer(
    name="pocketfleet",
    no_args_is_help=True,
    help="Self-hosted hosting for PocketBase backends.",
    pretty_exceptions_show_locals=False,
)
app.command()(local.serve)
app.command()(local.down)
app.command()(account.signup)
app.command()(account.login)
app.command()(account.logout)
app.command()(account.whoami)
app.command()(deploys.deploy)
app.add_typer(instances.app, name="instances")
app.add_typer(backups.app, name="backups")
app.add_typer(domains.app, name="domains")
app.add_typer(keys.app, name="keys")
app.add_typer(jobs.app, name="jobs")
app.add_typer(deploys.app, name="deploys")
app.add_typer(fleet.fleet_app, name="fleet")
app.add_typer(fleet.accounts_app, name="accounts")
app.add_typer(fleet.engines_app, name="engines")
app.add_typer(nodes.app, name="nodes")
app.add_typer(account.app, name="tokens")
app.add_typer(local.operator_app, name="operator")
app.add_typer(runtime_cli.app, name="runtime")


def main() -> None:
    app()
