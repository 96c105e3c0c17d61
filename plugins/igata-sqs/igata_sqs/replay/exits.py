"""Exit codes of ``igata replay`` and the exceptions that carry them."""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


class ReplayError(click.ClickException):
    """The replay cannot start: a usage error (exit 2) by default."""

    exit_code = EXIT_USAGE


class ReplayUnavailable(ReplayError):
    """The replay cannot start because SQS or DynamoDB does not answer (exit 3)."""

    exit_code = EXIT_UNAVAILABLE


class Unavailable(Exception):
    """An SQS or DynamoDB call failed after botocore's retries."""
