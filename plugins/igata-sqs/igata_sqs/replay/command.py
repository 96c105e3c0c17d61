"""The ``igata replay`` click command: options in, a summary line and an exit status out."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from igata_sqs.clients import check_queue_url, queue_name
from igata_sqs.queue import MAX_VISIBILITY
from igata_sqs.replay.exits import EXIT_UNAVAILABLE, ReplayError
from igata_sqs.replay.filters import Filters, Selector
from igata_sqs.replay.lookup import ErrorsFile, ErrorSource, open_requests_table
from igata_sqs.replay.mover import RECEIVE_WAIT_SECONDS, Replayer, Settings
from igata_sqs.replay.options import parse_attribute_filter, parse_rate, parse_since
from igata_sqs.replay.queues import default_target, is_fifo, queue_attributes
from igata_sqs.replay.signals import StopOnSignal


def _say(text: str, err: bool) -> None:
    click.echo(text, err=err)


@click.command(name="replay")
@click.option(
    "--from-dlq",
    "dlq_url",
    required=True,
    metavar="QUEUE_URL",
    help="Dead-letter queue to take messages from.",
)
@click.option(
    "--to",
    "target_url",
    metavar="QUEUE_URL",
    help="Queue to move them to. Default: the DLQ's source queue, when exactly one "
    "queue names it in its redrive policy (ListDeadLetterSourceQueues).",
)
@click.option(
    "--filter-error",
    "filter_error",
    multiple=True,
    metavar="TEXT",
    help="Only messages with a recorded error of one of their requests containing "
    "TEXT (case-insensitive; matched against 'stage: ErrorType: message' of the last "
    "failed attempt). Needs --errors-file and/or --requests-table. Repeatable: any.",
)
@click.option(
    "--errors-file",
    "errors_files",
    multiple=True,
    metavar="PATH",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Errors written by 'igata run --errors PATH' (JSON lines), for "
    "--filter-error. Repeatable (one per worker).",
)
@click.option(
    "--requests-table",
    envvar="OUTPUT_CTXMGR_REQUESTS_TABLENAME",
    metavar="NAME",
    help="REQUESTS table of the dynamodb sink, whose 'errors' attribute "
    "--filter-error searches [env OUTPUT_CTXMGR_REQUESTS_TABLENAME].",
)
@click.option(
    "--requests-hashkey",
    envvar="REQUESTS_TABLE_HASHKEY_KEYNAME",
    default="request_id",
    show_default=True,
    metavar="FIELD",
    help="Request field that keys the REQUESTS table [env REQUESTS_TABLE_HASHKEY_KEYNAME].",
)
@click.option(
    "--filter-body",
    "filter_body",
    multiple=True,
    metavar="TEXT",
    help="Only messages whose body contains TEXT (case-insensitive). Repeatable: any.",
)
@click.option(
    "--filter-attribute",
    "filter_attribute",
    multiple=True,
    metavar="NAME[=TEXT]",
    help="Only messages whose message attribute NAME contains TEXT (case-insensitive; "
    "NAME alone: has the attribute). Repeatable: any.",
)
@click.option(
    "--since",
    metavar="TIME",
    help="Only messages sent at or after TIME: ISO 8601 (2024-05-01T09:30:00Z; no "
    "zone = UTC) or an age (30m, 2h, 1d). Compared with the message's SentTimestamp.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="List the messages that would move (id, sent time, request ids, why) and move nothing.",
)
@click.option(
    "--rate",
    metavar="N/s",
    help="Move at most N messages a second (5/s, 120/m, 5). Default: as fast as SQS takes them.",
)
@click.option(
    "--max",
    "max_messages",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N matching messages.",
)
@click.option(
    "--scan-visibility",
    type=click.IntRange(min=5, max=MAX_VISIBILITY),
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="How long each scanned message stays hidden (renewed while the scan lasts) so "
    "the scan sees it once; after a crash, messages reappear within this time.",
)
@click.option(
    "--id-field",
    envvar="REQUEST_UNIQUE_ID_FIELDNAME",
    default="request_id",
    show_default=True,
    metavar="FIELD",
    help="Request field shown as its id and used to find its errors "
    "[env REQUEST_UNIQUE_ID_FIELDNAME].",
)
@click.option(
    "--endpoint-url",
    metavar="URL",
    help="SQS endpoint (default: AWS_ENDPOINT_URL_SQS, SQS_ENDPOINT, AWS_ENDPOINT_URL, else AWS).",
)
@click.pass_context
def replay(
    ctx: click.Context,
    dlq_url: str,
    target_url: str | None,
    filter_error: tuple[str, ...],
    errors_files: tuple[Path, ...],
    requests_table: str | None,
    requests_hashkey: str,
    filter_body: tuple[str, ...],
    filter_attribute: tuple[str, ...],
    since: str | None,
    dry_run: bool,
    rate: str | None,
    max_messages: int | None,
    scan_visibility: int,
    id_field: str,
    endpoint_url: str | None,
) -> None:
    """Move dead-lettered messages back to a queue, selectively.

    Scans the dead-letter queue once. Each selected message is sent to the target first
    (same body and message attributes; FIFO: same message group) and deleted from the
    dead-letter queue only if the send succeeded. Messages not moved are made visible
    again when the scan ends. Filters of different kinds must all match.

    Exit status: 0 every selected message moved (or dry run), 1 some could not be moved
    (they stay in the dead-letter queue), 2 usage error, 3 SQS/DynamoDB unavailable,
    128+N stopped by signal N.
    """
    for url, flag in ((dlq_url, "--from-dlq"), (target_url, "--to")):
        if url is not None:
            try:
                check_queue_url(url, flag)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=flag) from None
    filters = Filters(
        body=tuple(filter_body),
        attributes=tuple(parse_attribute_filter(text) for text in filter_attribute),
        errors=tuple(filter_error),
        since=parse_since(since) if since else None,
    )
    settings = Settings(
        dry_run=dry_run,
        rate=parse_rate(rate) if rate else None,
        max_messages=max_messages or 0,
        scan_visibility=scan_visibility,
        id_field=id_field,
    )
    from igata_sqs.clients import make_client

    client = make_client("sqs", endpoint_url=endpoint_url, read_timeout=RECEIVE_WAIT_SECONDS + 15)
    if errors_files and not filter_error:
        raise click.UsageError(
            "--errors-file is only read for --filter-error; add --filter-error TEXT, or use "
            "--filter-body/--filter-attribute to select by the message itself"
        )
    sources: list[ErrorSource] = []
    if filter_error:
        if errors_files:
            sources.append(ErrorsFile(errors_files))
        if requests_table:
            sources.append(open_requests_table(requests_table, requests_hashkey))
    selector = Selector(filters, sources)

    dlq_fifo = is_fifo(queue_attributes(client, dlq_url, "dead-letter queue"), dlq_url)
    if target_url is None:
        target_url = default_target(client, dlq_url)
        click.echo(f"replay: target {target_url} (the only queue dead-lettering into the DLQ)")
    if target_url.rstrip("/") == dlq_url.rstrip("/"):
        raise click.BadParameter("the target is the dead-letter queue itself", param_hint="--to")
    target_fifo = is_fifo(queue_attributes(client, target_url, "target queue"), target_url)
    if target_fifo and not dlq_fifo:
        raise ReplayError(
            f"replay: {queue_name(target_url)} is a FIFO queue but {queue_name(dlq_url)} is not, "
            "so its messages have no message group; replay into a standard queue"
        )

    stop = threading.Event()
    replayer = Replayer(
        client, dlq_url, target_url, selector, settings,
        target_fifo=target_fifo, say=_say, stop_event=stop,
    )  # fmt: skip
    with StopOnSignal(stop, _say) as signals:
        try:
            summary = replayer.run()
        except KeyboardInterrupt:
            summary = replayer.summary
            summary.signal = signal.SIGINT
    summary.signal = summary.signal or signals.signum
    click.echo(summary.line())
    if summary.stopped:
        click.echo(f"replay: stopped early: {summary.stopped}", err=True)
    if summary.unscanned and summary.exit_code != EXIT_UNAVAILABLE:
        click.echo(
            f"replay: about {summary.unscanned} message(s) in {summary.source} were not scanned "
            "(FIFO groups behind a message that was not moved, messages dead-lettered during "
            "the scan, or an early stop); run the replay again to reach them",
            err=True,
        )
    code = 128 + int(summary.signal) if summary.signal else summary.exit_code
    ctx.exit(code)
