"""The click commands ``igata submit``, ``igata status`` and ``igata export``.

Only click and the standard library at import time: boto3 and the other plugins' modules
are imported inside the callbacks, so ``igata --help`` stays instant.
"""

from __future__ import annotations

import sys

import click

from igata_jobs.aws import QUEUE_ENV, REQUESTS_TABLE_ENV, RESULTS_TABLE_ENV, JobError

#: The ``s3`` source's default extensions (igata_s3.source.DEFAULT_EXTENSIONS), without
#: importing it here.
_EXTENSIONS_HELP = (
    "Under a prefix, only keys ending with one of these, comma-separated "
    "(case-insensitive; '*' for all). Default: the s3 source's (.png .jpg .jpeg .gif .bmp "
    ".tif .tiff .webp .csv .csv.gz). Objects named one by one and manifest entries are "
    "never filtered."
)

queue_option = click.option(
    "--queue",
    "queue_url",
    envvar=list(QUEUE_ENV),
    metavar="URL",
    help=f"Request queue of the workers [env {', '.join(QUEUE_ENV)}].",
)
requests_table_option = click.option(
    "--requests-table",
    envvar=REQUESTS_TABLE_ENV,
    metavar="NAME",
    help=f"REQUESTS table of the dynamodb sink [env {REQUESTS_TABLE_ENV}].",
)
requests_hashkey_option = click.option(
    "--requests-hashkey",
    envvar="REQUESTS_TABLE_HASHKEY_KEYNAME",
    default="request_id",
    show_default=True,
    metavar="FIELD",
    help="REQUESTS hash key [env REQUESTS_TABLE_HASHKEY_KEYNAME].",
)
state_keyname_option = click.option(
    "--state-keyname",
    envvar="REQUESTS_TABLE_STATE_KEYNAME",
    default="state",
    show_default=True,
    metavar="FIELD",
    help="REQUESTS state attribute, range key of the collection_id index "
    "[env REQUESTS_TABLE_STATE_KEYNAME].",
)


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    from igata_sqs.replay.options import parse_rate

    return parse_rate(value)


def _extensions(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise click.BadParameter("give at least one extension, or '*'", param=param)
    return parts


@click.command(name="submit")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@queue_option
@requests_table_option
@requests_hashkey_option
@state_keyname_option
@click.option(
    "--collection-id",
    metavar="ID",
    help="Collection of the requests (their collection_id). Default: the one of an "
    "unfinished submit of the same job (its cursor), else a new id, printed.",
)
@click.option(
    "--per-message",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="N",
    help="Requests per message (the message also stays under --max-message-bytes).",
)
@click.option(
    "--max-message-bytes",
    type=click.IntRange(min=1024, max=1024 * 1024),
    default=256 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Size limit of a message and of one SendMessageBatch call (also capped "
    "at the queue's MaximumMessageSize).",
)
@click.option("--extensions", callback=_extensions, metavar="EXT,...", help=_EXTENSIONS_HELP)
@click.option(
    "--pattern",
    default="",
    metavar="GLOB",
    help="Under a prefix, only keys matching this glob (fnmatch on the whole key, "
    "e.g. 'photos/2024-*/*.jpg'); replaces --extensions.",
)
@click.option(
    "--rate",
    callback=_rate,
    metavar="N/s",
    help="Submit at most N requests a second (5/s, 120/m, 5). Default: as fast as SQS takes them.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count the requests and messages and print a sample message; send and write nothing.",
)
@click.option(
    "--fifo-groups",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    metavar="N",
    help="FIFO queues: spread the messages over N message groups "
    "(COLLECTION-0 ... COLLECTION-N-1), so up to N workers take messages at once.",
)
@click.option(
    "--cursor",
    metavar="PATH|s3://BUCKET/KEY",
    help="Where the cursor is kept (a local file or an S3 object). Default: a file "
    "named after the job under $IGATA_STATE_DIR/submit or ~/.cache/igata/submit.",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Ignore the cursor of an earlier submit of the same job and start over "
    "(a new collection unless --collection-id is given).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on standard error. Default: on a terminal.",
)
def submit(
    sources: tuple[str, ...],
    queue_url: str | None,
    requests_table: str | None,
    requests_hashkey: str,
    state_keyname: str,
    collection_id: str | None,
    per_message: int,
    max_message_bytes: int,
    extensions: list[str] | None,
    pattern: str,
    rate: float | None,
    dry_run: bool,
    fifo_groups: int,
    cursor: str | None,
    restart: bool,
    progress: bool | None,
) -> None:
    """Submit a batch job: turn SOURCE into request messages for the workers.

    SOURCE is an S3 prefix (s3://bucket/photos/), object URIs (several, or comma-separated),
    or a manifest: a local file or S3 object ending in .csv (S3 Batch Operations'
    bucket,key[,version_id], or a header with s3_uri), .jsonl/.ndjson or .txt (optionally
    .gz). Each object becomes a request {collection_id, image_id, s3_uri, request_id}; the
    request id is derived from the collection, bucket, key and version, so submitting
    again duplicates nothing. With --requests-table each request first gets a 'queued'
    REQUESTS item, which `igata status` counts. An interrupted submit resumes where it
    stopped when run again; a finished one sends nothing more.

    Exit status: 0 all sent; 1 some entries were invalid or refused (listed); 2 usage or
    configuration error; 3 a service stayed unavailable (run again to resume).
    """
    from igata_jobs.submit import SubmitSettings
    from igata_jobs.submit import submit as run_submit

    if not dry_run and not queue_url:
        raise JobError(f"no queue: pass --queue URL or set {QUEUE_ENV[0]}")
    if collection_id is not None and not collection_id.strip():
        raise JobError("--collection-id is empty")
    settings = SubmitSettings(
        sources=list(sources),
        queue_url=queue_url,
        collection_id=collection_id,
        requests_table=requests_table,
        request_key=requests_hashkey,
        state_key=state_keyname,
        per_message=per_message,
        max_message_bytes=max_message_bytes,
        extensions=extensions,
        pattern=pattern,
        rate=rate,
        dry_run=dry_run,
        fifo_groups=fifo_groups,
        cursor=cursor,
        restart=restart,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    new = collection_id is None
    try:
        report = run_submit(settings)
    except KeyboardInterrupt:
        click.echo("submit: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    click.echo(
        f"collection: {report.collection_id}"
        + (" (new)" if new and not report.resumed and not report.already_done else "")
    )
    if report.already_done:
        refused = f", {report.earlier_refused} refused by SQS" if report.earlier_refused else ""
        click.echo(
            f"submit: already submitted ({report.earlier_requests} requests{refused}); "
            "nothing sent (--restart to submit again)"
        )
        return
    for problem in report.problems:
        click.echo(f"submit: skipped: {problem}", err=True)
    for request, why in report.refusals:
        click.echo(
            f"submit: refused by SQS: {request['s3_uri']} (request {request['request_id']}): {why}",
            err=True,
        )
    if report.refused > len(report.refusals):
        click.echo(
            f"submit: ... and {report.refused - len(report.refusals)} more requests refused"
            + (" (REQUESTS items in state error)" if requests_table else ""),
            err=True,
        )
    what = "would send" if dry_run else "sent"
    rate_text = f", {report.requests / report.seconds:.0f} requests/s" if report.seconds > 0 else ""
    line = (
        f"submit: {what} {report.requests} requests in {report.messages} messages"
        f" ({report.seconds:.1f} s{rate_text})"
    )
    if report.resumed:
        line += f"; resumed after {report.earlier_requests} sent earlier"
    if report.invalid:
        line += f"; {report.invalid} invalid entries skipped"
    if report.refused:
        where = "recorded as errors in REQUESTS" if requests_table else "listed above"
        line += f"; {report.refused} requests refused by SQS, not sent ({where})"
    click.echo(line)
    if dry_run and report.sample is not None:
        click.echo("sample message:")
        click.echo(_pretty(report.sample))
    if report.invalid or report.refused:
        sys.exit(1)


def _pretty(body: str) -> str:
    import json

    return json.dumps(json.loads(body)[:3], indent=2, ensure_ascii=False)


@click.command(name="status")
@click.argument("collection_id", metavar="COLLECTION")
@requests_table_option
@queue_option
@requests_hashkey_option
@state_keyname_option
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh every --interval seconds until the collection is done; then exit "
    "with the --json exit code.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Refresh interval of --watch.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON and exit 0 when every request completed, 1 when done with "
    "errors, 4 while in progress.",
)
@click.option(
    "--error-sample",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="Failed requests read to find the most common errors.",
)
def status(
    collection_id: str,
    requests_table: str | None,
    queue_url: str | None,
    requests_hashkey: str,
    state_keyname: str,
    watch: bool,
    interval: float,
    as_json: bool,
    error_sample: int,
) -> None:
    """Show a collection's progress: requests by state (from the REQUESTS table's
    collection_id-state-index), the queue's visible / in-flight / delayed messages and its
    dead-letter queue's depth (with --queue), the throughput over the last minute, an ETA
    and the most common errors.

    Exit status with --json or --watch: 0 done (every request completed), 1 done with
    errors, 4 in progress; otherwise 0. 2: usage or configuration error, 3: a service
    stayed unavailable.
    """
    import time

    from igata_jobs.aws import check_table, dynamodb_client, sqs_client
    from igata_jobs.aws import layout as make_layout
    from igata_jobs.status import Rate, read_status

    if not requests_table:
        raise JobError(f"no REQUESTS table: pass --requests-table NAME or set {REQUESTS_TABLE_ENV}")
    layout = make_layout(requests_table, request_key=requests_hashkey, state_key=state_keyname)
    ddb = dynamodb_client()
    check_table(ddb, layout, "REQUESTS")
    sqs = sqs_client() if queue_url else None
    tty = sys.stdout.isatty()
    rate = Rate()
    while True:
        found = read_status(
            ddb, layout, collection_id, sqs=sqs, queue_url=queue_url, error_sample=error_sample
        )
        if watch:
            rate.update(found)
        if as_json:
            click.echo(found.as_json())
        else:
            if watch and tty:
                click.clear()
            click.echo(found.text())
        if found.total == 0 and not watch:
            click.echo(
                f"status: no REQUESTS items for collection {collection_id!r} in "
                f"{requests_table} (was it submitted with --requests-table?)",
                err=True,
            )
        if not watch or found.done:
            break
        time.sleep(interval)
    if watch or as_json:
        sys.exit(found.exit_code)


@click.command(name="export")
@click.argument("collection_id", metavar="COLLECTION")
@click.option(
    "--to",
    "dest",
    required=True,
    metavar="DEST",
    help="Where the results go: a local .jsonl or .csv file, or s3://BUCKET/PREFIX/ "
    "(part objects part-00000.jsonl ...).",
)
@requests_table_option
@click.option(
    "--results-table",
    envvar=RESULTS_TABLE_ENV,
    metavar="NAME",
    help=f"RESULTS table of the dynamodb sink [env {RESULTS_TABLE_ENV}].",
)
@requests_hashkey_option
@state_keyname_option
@click.option(
    "--results-sortkey",
    envvar="RESULTS_SORTKEY_KEYNAME",
    default="s3_uri",
    show_default=True,
    metavar="FIELD",
    help="RESULTS range key [env RESULTS_SORTKEY_KEYNAME].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv"]),
    default="auto",
    show_default=True,
    help="Output format; auto: csv for a DEST ending in .csv, else jsonl.",
)
@click.option(
    "--fields",
    metavar="NAME,...",
    help="CSV: the columns, in order (default: the first result's attributes).",
)
@click.option(
    "--errors-to",
    metavar="DEST",
    help="Also export the collection's failed requests (REQUESTS items in state "
    "error, with their errors) to DEST.",
)
@click.option(
    "--read",
    "read",
    type=click.Choice(["auto", "keys", "scan"]),
    default="auto",
    show_default=True,
    help="keys: RESULTS items by key (BatchGetItem) for the "
    "completed requests of the collection index; scan: a parallel Scan of "
    "RESULTS; auto: keys when the REQUESTS items carry the sort key (igata submit "
    "writes it).",
)
@click.option(
    "--segments",
    type=click.IntRange(min=1, max=1000),
    default=4,
    show_default=True,
    metavar="N",
    help="Parallel Scan segments (--read scan).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=8,
    show_default=True,
    metavar="N",
    help="Parallel BatchGetItem calls (--read keys).",
)
def export(
    collection_id: str,
    dest: str,
    requests_table: str | None,
    results_table: str | None,
    requests_hashkey: str,
    state_keyname: str,
    results_sortkey: str,
    fmt: str,
    fields: str | None,
    errors_to: str | None,
    read: str,
    segments: int,
    workers: int,
) -> None:
    """Export a collection's RESULTS items (and, with --errors-to, its failed requests)
    through the jsonl / csv / s3-jsonl / s3-csv sinks.

    Exit status: 0 everything exported; 1 some RESULTS items were missing or refused by
    the sink; 2 usage or configuration error; 3 a service stayed unavailable.
    """
    from igata_jobs.export import ExportSettings
    from igata_jobs.export import export as run_export

    if not requests_table:
        raise JobError(f"no REQUESTS table: pass --requests-table NAME or set {REQUESTS_TABLE_ENV}")
    if not results_table:
        raise JobError(f"no RESULTS table: pass --results-table NAME or set {RESULTS_TABLE_ENV}")
    settings = ExportSettings(
        collection_id=collection_id,
        dest=dest,
        requests_table=requests_table,
        results_table=results_table,
        request_key=requests_hashkey,
        state_key=state_keyname,
        sort_key=results_sortkey,
        format=fmt,
        fields=[f.strip() for f in (fields or "").split(",") if f.strip()],
        errors_to=errors_to,
        read=read,
        segments=segments,
        workers=workers,
    )
    report = run_export(settings)
    line = (
        f"export: {report.results} results of {report.completed} completed requests to "
        f"{dest} ({report.read}, {report.seconds:.1f} s)"
    )
    if errors_to:
        line += f"; {report.errors} failed requests to {errors_to}"
    click.echo(line)
    if report.missing:
        click.echo(
            f"export: {report.missing} RESULTS items counted by REQUESTS were not found "
            "(a worker may be rewriting them; export again)",
            err=True,
        )
    if report.rejected:
        click.echo(f"export: {report.rejected} records refused by the sink", err=True)
    if report.missing or report.rejected:
        sys.exit(1)
