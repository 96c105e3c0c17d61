"""``igata dynamodb …``: commands for the DynamoDB tables (registered by the plugin)."""

from __future__ import annotations

import os

import click

from igata_core.options import Option, resolve
from igata_dynamodb.layout import OPTIONS, Layout
from igata_dynamodb.tables import BILLING_MODES, Capacity, TableProblem, create_tables

#: The sink options that name tables and keys, with the flags that set them here.
_TABLE_FLAGS = {
    "requests_tablename": "requests_table",
    "results_tablename": "results_table",
    "requests_hashkey_keyname": "requests_hashkey",
    "results_sortkey_keyname": "results_sortkey",
    "state_keyname": "state_keyname",
}


def _sink_env(option: Option) -> list[str]:
    return [f"OUTPUT_CTXMGR_{option.name.upper()}"]


def _with_flag(problem: str) -> str:
    """A problem about a sink option, naming this command's flag for it too."""
    for name, flag in _TABLE_FLAGS.items():
        if f"option {name!r}" in problem:
            return f"{problem} (flag --{flag.replace('_', '-')})"
    return problem


@click.group(name="dynamodb", help="Manage the DynamoDB tables of the dynamodb sink.")
def dynamodb() -> None:
    pass


@dynamodb.command(name="create-tables")
@click.option(
    "--requests-table",
    help="REQUESTS table name [env OUTPUT_CTXMGR_REQUESTS_TABLENAME].",
)
@click.option(
    "--results-table",
    help="RESULTS table name [env OUTPUT_CTXMGR_RESULTS_TABLENAME].",
)
@click.option(
    "--requests-hashkey",
    help="REQUESTS hash key [env REQUESTS_TABLE_HASHKEY_KEYNAME; default request_id].",
)
@click.option(
    "--results-sortkey",
    help="RESULTS range key [env RESULTS_SORTKEY_KEYNAME; default s3_uri].",
)
@click.option(
    "--state-keyname",
    help="REQUESTS state attribute, range key of its index [env REQUESTS_TABLE_STATE_KEYNAME; "
    "default state].",
)
@click.option(
    "--billing-mode",
    type=click.Choice(BILLING_MODES),
    default="PAY_PER_REQUEST",
    show_default=True,
    help="Billing of the new tables.",
)
@click.option(
    "--read-capacity",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Read capacity units per table and index (PROVISIONED only).",
)
@click.option(
    "--write-capacity",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Write capacity units per table and index (PROVISIONED only).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Return only when both tables are ACTIVE.",
)
def create_tables_command(
    billing_mode: str, read_capacity: int, write_capacity: int, wait: bool, **flags: str | None
) -> None:
    """Create the REQUESTS and RESULTS tables with the original igata layout.

    Existing tables are reported and left alone (an error if their keys differ). Meant
    for development and tests; the endpoint comes from AWS_ENDPOINT_URL(_DYNAMODB) or
    DYNAMODB_ENDPOINT.
    """
    import boto3
    from botocore.config import Config

    from igata_core.awsconfig import client_kwargs, config_kwargs

    declared = [opt for opt in OPTIONS if opt.name in _TABLE_FLAGS]
    cli = {name: flags[flag] for name, flag in _TABLE_FLAGS.items() if flags[flag]}
    resolved, problems = resolve(
        declared,
        owner="igata dynamodb create-tables",
        cli=cli,
        environ=os.environ,
        extra_env=_sink_env,
    )
    if problems:
        raise click.UsageError("\n".join(_with_flag(problem) for problem in problems))
    defaults = {opt.name: opt.default for opt in OPTIONS}
    layout = Layout.from_options({**defaults, **resolved.values})
    client = boto3.client(
        "dynamodb", **client_kwargs("dynamodb"), config=Config(**config_kwargs("dynamodb"))
    )
    capacity = Capacity(billing_mode, read_capacity, write_capacity)
    try:
        report = create_tables(client, layout, capacity, wait=wait)
    except TableProblem as exc:
        raise click.ClickException(str(exc)) from exc
    for table, status in report:
        click.echo(f"{status}: {table}")
