"""Clients, the job's names (queue, tables) and the errors that end a command.

The names come from the same options and environment variables as the ``sqs`` source and
the ``dynamodb`` sink, so one environment serves the workers and these commands. Service
errors are sorted by igata-sqs's and igata-dynamodb's own classifications (content /
configuration / outage): a configuration refused is exit 2, an outage exit 3.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click

from igata_core import ConfigurationError

#: Environment variables naming the request queue (the ``sqs`` source's, newest first).
QUEUE_ENV = ("INPUT_CTXMGR_SQS_QUEUE_URL", "INPUT_CTXMANAGER_SQS_QUEUE_URL")
REQUESTS_TABLE_ENV = "OUTPUT_CTXMGR_REQUESTS_TABLENAME"
RESULTS_TABLE_ENV = "OUTPUT_CTXMGR_RESULTS_TABLENAME"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class JobError(click.ClickException):
    """A usage or configuration error: nothing (more) is done, exit 2."""

    exit_code = EXIT_USAGE


class JobUnavailable(click.ClickException):
    """A service stayed unavailable after botocore's retries: exit 3."""

    exit_code = EXIT_UNAVAILABLE


def queue_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    for name in QUEUE_ENV:
        if environ.get(name):
            return environ[name]
    return None


def sqs_client(pool_size: int = 10) -> Any:
    from igata_sqs.clients import make_client

    return make_client("sqs", pool_size=pool_size)


def dynamodb_client(pool_size: int = 10) -> Any:
    import boto3
    from botocore.config import Config

    from igata_core.awsconfig import client_kwargs, config_kwargs

    config = Config(**config_kwargs("dynamodb", max_pool_connections=pool_size))
    return boto3.session.Session().client("dynamodb", **client_kwargs("dynamodb"), config=config)


def s3_client(pool_size: int = 10) -> Any:
    from igata_s3.client import s3_client as shared

    return shared(pool_size)


def layout(
    requests_table: str | None,
    results_table: str | None = None,
    *,
    request_key: str = "request_id",
    state_key: str = "state",
    sort_key: str = "s3_uri",
) -> Any:
    from igata_dynamodb.layout import Layout

    return Layout(
        requests_table=requests_table or "",
        results_table=results_table or "",
        request_key=request_key,
        state_key=state_key,
        sort_key=sort_key,
    )


def check_table(client: Any, layout: Any, role: str) -> Any:
    """Describe the ``role`` table (REQUESTS or RESULTS) and check its keys.

    Returns its shape (None when DescribeTable is denied: the calls that follow tell);
    raises :class:`JobError` (exit 2) for a missing table, refused credentials or keys
    other than configured, :class:`JobUnavailable` for an outage.
    """
    from igata_dynamodb.errors import DENIED_CODES, Kind, classify, configuration_error
    from igata_dynamodb.tables import TABLE_NAME, describe, key_problem

    table = layout.requests_table if role == "REQUESTS" else layout.results_table
    if not TABLE_NAME.fullmatch(table):
        env = REQUESTS_TABLE_ENV if role == "REQUESTS" else RESULTS_TABLE_ENV
        raise JobError(
            f"{table!r} is not a valid name for the {role} table (3 to 255 characters among "
            f"a-z, A-Z, 0-9, '_', '-' and '.'); set {env}"
        )
    try:
        shape = describe(client, table)
    except Exception as exc:
        error = classify(exc)
        if error.code in DENIED_CODES:
            return None
        if error.kind in (Kind.CONFIGURATION, Kind.CONTENT):
            refused = configuration_error(
                error,
                role=role,
                table=table,
                action="DescribeTable",
                client=client,
                layout=layout,
            )
            raise JobError(str(refused)) from None
        raise JobUnavailable(
            f"dynamodb: cannot describe the {role} table {table!r}: {exc}"
        ) from exc
    problem = key_problem(shape, role, layout, client)
    if problem:
        raise JobError(problem)
    return shape


def dynamodb_failure(
    exc: BaseException, *, role: str, table: str, action: str, client: Any, layout: Any
) -> click.ClickException:
    """The exception that ends a command after a DynamoDB call failed."""
    from igata_dynamodb.errors import Kind, classify, configuration_error

    error = classify(exc)
    if error.kind == Kind.CONFIGURATION or isinstance(exc, ConfigurationError):
        refused = configuration_error(
            error, role=role, table=table, action=action, client=client, layout=layout
        )
        return JobError(str(refused))
    if error.kind == Kind.CONTENT:
        return JobError(
            f"dynamodb: {action} on the {role} table {table!r} refused: {error.describe()}"
        )
    return JobUnavailable(
        f"dynamodb: {action} on the {role} table {table!r} failed after retries: {error.describe()}"
    )


def sqs_failure(exc: BaseException, *, url: str, action: str) -> click.ClickException:
    """The exception that ends a command after an SQS call failed."""
    from igata_sqs import errors
    from igata_sqs.clients import describe
    from igata_sqs.queue import QueueRefused, refused

    if isinstance(exc, QueueRefused):
        return JobError(str(exc))
    kind = errors.classify(exc)
    if kind == errors.CONFIGURATION:
        return JobError(str(refused(url, action, exc)))
    if kind in (errors.CONTENT, errors.REQUEST):
        return JobError(f"sqs: {action} on queue {url} refused: {describe(exc)}")
    return JobUnavailable(f"sqs: {action} on queue {url} failed after retries: {describe(exc)}")


def s3_failure(exc: BaseException, doing: str) -> click.ClickException:
    """The exception that ends a command after reading a SOURCE (a listing, a manifest)
    failed: igata-s3's classification (configuration -> exit 2, else exit 3)."""
    from igata_core import ServiceUnavailable
    from igata_s3.errors import CREDENTIALS, DENIED, NO_BUCKET, WRONG_REGION, error_code, is_outage

    if isinstance(exc, ServiceUnavailable):
        return JobUnavailable(str(exc))
    if isinstance(exc, ConfigurationError):
        return JobError(str(exc))
    code = error_code(exc)
    if code in {"NoSuchKey", "404", "NotFound"} | NO_BUCKET | DENIED | CREDENTIALS | WRONG_REGION:
        return JobError(f"s3: {doing}: {exc}")
    if is_outage(exc) or not code:
        return JobUnavailable(f"s3: {doing} failed after retries: {type(exc).__name__}: {exc}")
    return JobError(f"s3: {doing}: {exc}")
