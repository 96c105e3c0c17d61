"""The main job end to end on a local AWS: ``nox -s demo`` runs ``python -m examples.demo``.

    python -m examples.demo [--count N] [--workers N] [--keep DIR]

No cloud account is needed: AWS is moto in server mode on a free loopback port of this
process, reached over HTTP through boto3 exactly as production reaches AWS. The demo

1. trains the digits classifier on scikit-learn's bundled data set (a second or two);
2. creates the bucket, the request queue with a dead-letter queue (redrive after
   ``MAX_RECEIVE_COUNT`` receives), the SNS completion topic with an SQS queue subscribed to
   it, and the REQUESTS and RESULTS tables with the real ``igata dynamodb create-tables``;
3. uploads N test images as PNG objects, pre-creates every request's REQUESTS item with
   state ``queued`` (as a producer would) and sends the requests in the original README's
   format, ``REQUESTS_PER_MESSAGE`` per message, plus deliberately bad input: a corrupt and a
   truncated PNG, a key that does not exist, a request without its ``image_id`` (all four in
   one message with good requests) and a message body that is not JSON;
4. runs ``igata run --source sqs --sink dynamodb`` in W worker processes until the queue is
   drained (``idle_timeout``);
5. reads back REQUESTS, RESULTS, both queues and the SNS notices, prints a short report and
   checks it: the workers exited 0, every good request is ``completed`` with one RESULTS
   item, accuracy is at least ``MIN_ACCURACY``, every bad request is ``error`` at the stage
   it should fail at, exactly the two failing messages sit in the dead-letter queue, the
   request queue is empty and every request was announced on the topic.

Exit status: 0 when all of that holds, 1 when not (the report says what differs), 2 on a
usage error. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_ACCURACY = 0.85
DEFAULT_COUNT = 300
MAX_WORKERS = 8
REQUESTS_PER_MESSAGE = 10
#: Receives before SQS moves a failing message to the dead-letter queue.
MAX_RECEIVE_COUNT = 2
#: The request queue's lease; the workers' heartbeat renews it while they process a message.
VISIBILITY_TIMEOUT = 10
#: SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION of the workers: a failed message is back in 1 s.
RETRY_DELAY = 1
#: A worker stops once the queue has been empty for this long.
IDLE_TIMEOUT = 2
WORKER_TIMEOUT = 150

BUCKET = "igata-demo-images"
QUEUE = "igata-demo-requests"
DEAD_LETTER_QUEUE = "igata-demo-requests-dlq"
TOPIC = "igata-demo-complete"
NOTICE_QUEUE = "igata-demo-notices"
REQUESTS_TABLE = "igata-demo-requests"
RESULTS_TABLE = "igata-demo-results"
COLLECTION_ID = "events:igata-demo"
MALFORMED_BODY = '[{"collection_id": "events:igata-demo", "image_id": images:broken'
#: Good requests ahead of the bad ones in the first message, so it mixes both kinds.
GOOD_BEFORE_BAD = 6

_REPO_ROOT = Path(__file__).resolve().parents[1]
#: The igata command of this interpreter (the one nox installed igata and the plugins into).
IGATA = [sys.executable, "-m", "igata_core"]
#: The workers' environment starts from these only: a stray AWS_PROFILE, endpoint or igata
#: setting of the caller's shell must not send the demo elsewhere.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP",
                  "SYSTEMROOT", "VIRTUAL_ENV")  # fmt: skip
_SUMMARY_LINE = re.compile(r"summary: (read \d+, succeeded \d+, failed \d+, .*)$", re.MULTILINE)


class DemoError(Exception):
    """The demo cannot run as asked (exit code 2)."""


class DemoFailed(Exception):
    """A step of the demo failed before there was anything to report (exit code 1)."""


# -- what the demo sends ------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request as sent, with what should become of it."""

    request_id: str
    fields: dict[str, str]
    #: The digit's true label; None for a bad request.
    label: int | None = None
    #: The stage at which a bad request must fail; None for a good one.
    expected_stage: str | None = None
    #: What is wrong with a bad request, for the report.
    flaw: str = ""

    @property
    def good(self) -> bool:
        return self.expected_stage is None


@dataclass(frozen=True)
class Message:
    """One SQS message body and the requests in it (none for a malformed body)."""

    body: str
    requests: tuple[Request, ...] = ()
    malformed: bool = False

    @property
    def should_fail(self) -> bool:
        return self.malformed or any(not r.good for r in self.requests)


@dataclass
class Plan:
    requests: list[Request]
    messages: list[Message]

    @property
    def good(self) -> list[Request]:
        return [r for r in self.requests if r.good]

    @property
    def bad(self) -> list[Request]:
        return [r for r in self.requests if not r.good]


def image_key(name: str) -> str:
    return f"digits/{name}"


def build_plan(images: dict[str, int], bad_keys: dict[str, str], topic_arn: str) -> Plan:
    """The requests and messages of the demo.

    ``images`` maps uploaded file names to their true labels; ``bad_keys`` holds the keys
    of the uploaded bad objects under ``"corrupt"`` and ``"truncated"``. Requests follow the
    original README's image format; every other message names the completion topic in
    ``sns_topic_arn``, the rest rely on the workers' REQUESTS_COMPLETE_SNS_TOPIC_ARN.
    """
    good = []
    for name, label in sorted(images.items()):
        number = name.split("-")[1]
        good.append(
            Request(
                request_id=f"req-{number}",
                fields={
                    "collection_id": COLLECTION_ID,
                    "image_id": f"images:{number}",
                    "s3_uri": f"s3://{BUCKET}/{image_key(name)}",
                },
                label=label,
            )
        )

    def bad(name: str, stage: str, flaw: str, key: str, *, without: str = "") -> Request:
        request = {"collection_id": COLLECTION_ID, "image_id": f"images:{name}",
                   "s3_uri": f"s3://{BUCKET}/{key}"}  # fmt: skip
        request.pop(without, None)
        return Request(f"req-bad-{name}", request, expected_stage=stage, flaw=flaw)

    bad_requests = [
        bad("corrupt", "decode", "random bytes named .png", bad_keys["corrupt"]),
        bad("truncated", "decode", "a PNG cut in half", bad_keys["truncated"]),
        bad("missing-key", "load", "s3_uri names a key that does not exist",
            "digits/no-such-image.png"),
        bad("no-image-id", "parse", "lacks the required field image_id",
            image_key(min(images)), without="image_id"),
    ]  # fmt: skip
    ordered = good[:GOOD_BEFORE_BAD] + bad_requests + good[GOOD_BEFORE_BAD:]
    messages = []
    for start in range(0, len(ordered), REQUESTS_PER_MESSAGE):
        chunk = tuple(ordered[start : start + REQUESTS_PER_MESSAGE])
        # Every other message names its topic itself; the rest rely on the workers' default.
        topic = {"sns_topic_arn": topic_arn} if len(messages) % 2 == 0 else {}
        body = [{**r.fields, "request_id": r.request_id, **topic} for r in chunk]
        messages.append(Message(json.dumps(body), chunk))
    messages.append(Message(MALFORMED_BODY, malformed=True))
    return Plan(good + bad_requests, messages)


# -- what the demo finds afterwards ------------------------------------------------------------


@dataclass
class Observed:
    """Everything read back from the local AWS after the workers exited."""

    exit_codes: list[int]
    #: REQUESTS items by request id, ``errors`` and ``result`` parsed from their JSON.
    requests: dict[str, dict[str, Any]]
    results: list[dict[str, Any]]
    #: Message id -> body of what sits in the dead-letter queue.
    dead_letters: dict[str, str]
    #: Visible, in flight, delayed messages left in the request queue.
    queue_counts: tuple[int, int, int]
    #: Entries of the detailed SNS notices (request_id, status, …).
    notices: list[dict[str, Any]]
    #: Error outcomes from the workers' --errors files.
    worker_errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Check:
    """The outcome of comparing what was found with what should be; no problems = OK."""

    completed: int = 0
    correct: int = 0
    misclassified: list[str] = field(default_factory=list)
    notices_by_status: Counter[str] = field(default_factory=Counter)
    duplicate_notices: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.completed if self.completed else 0.0


def evaluate(plan: Plan, sent: dict[str, Message], seen: Observed) -> Check:
    """Compare ``seen`` with what ``plan`` should give; ``sent`` maps message ids to messages."""
    check = Check()
    problems = check.problems
    if any(code != 0 for code in seen.exit_codes):
        problems.append(f"worker exit codes {seen.exit_codes}; expected 0 for each (a clean drain)")

    results_by_request: dict[str, list[dict[str, Any]]] = {}
    for item in seen.results:
        results_by_request.setdefault(str(item.get("request_id")), []).append(item)
    wanted = {r.request_id: r for r in plan.requests}
    strangers = sorted(set(results_by_request) - {r.request_id for r in plan.good})
    if strangers:
        problems.append(f"RESULTS items for requests that should have none: {strangers[:5]}")

    not_completed, not_one_result = [], []
    for request in plan.good:
        item = seen.requests.get(request.request_id, {})
        results = results_by_request.get(request.request_id, [])
        if item.get("state") != "completed":
            not_completed.append(f"{request.request_id} ({item.get('state', 'no item')})")
            continue
        if len(results) != 1 or results[0].get("s3_uri") != request.fields["s3_uri"]:
            not_one_result.append(f"{request.request_id} ({len(results)} items)")
            continue
        check.completed += 1
        predicted = results[0].get("label")
        if predicted == str(request.label):
            check.correct += 1
        else:
            check.misclassified.append(
                f"{request.request_id} (true {request.label}, predicted {predicted})"
            )
    if not_completed:
        problems.append(
            f"{len(not_completed)} good request(s) not completed, e.g. {not_completed[:3]}"
        )
    if not_one_result:
        problems.append(
            f"{len(not_one_result)} completed request(s) without exactly one RESULTS item for "
            f"their s3_uri, e.g. {not_one_result[:3]}"
        )
    if check.completed and check.accuracy < MIN_ACCURACY:
        problems.append(f"accuracy {check.accuracy:.3f} is below {MIN_ACCURACY}")

    for request in plan.bad:
        item = seen.requests.get(request.request_id, {})
        stages = [e.get("stage") for e in item.get("errors", [])]
        if item.get("state") != "error" or request.expected_stage not in stages:
            problems.append(
                f"{request.request_id} ({request.flaw}) should be 'error' at stage "
                f"'{request.expected_stage}', found state {item.get('state', 'no item')!r}, "
                f"error stages {stages}"
            )

    expected_dead = {mid for mid, message in sent.items() if message.should_fail}
    if set(seen.dead_letters) != expected_dead:
        problems.append(
            f"the dead-letter queue holds {sorted(seen.dead_letters)}, expected exactly the "
            f"failing messages {sorted(expected_dead)}"
        )
    if any(seen.queue_counts):
        visible, in_flight, delayed = seen.queue_counts
        problems.append(
            f"the request queue is not empty: {visible} visible, {in_flight} in flight, "
            f"{delayed} delayed"
        )

    announced: dict[str, Counter[str]] = {}
    for entry in seen.notices:
        announced.setdefault(str(entry.get("request_id")), Counter())[str(entry.get("status"))] += 1
        check.notices_by_status[str(entry.get("status"))] += 1
    check.duplicate_notices = sum(
        count - 1 for statuses in announced.values() for count in statuses.values() if count > 1
    )
    unannounced = [
        r.request_id
        for r in plan.requests
        if not announced.get(r.request_id, {}).get("completed" if r.good else "error")
    ]
    if unannounced:
        problems.append(
            f"{len(unannounced)} request(s) without their SNS notice, e.g. {unannounced[:3]}"
        )
    strangers = sorted(set(announced) - set(wanted))
    if strangers:
        problems.append(f"SNS notices for unknown requests: {strangers[:5]}")
    return check


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Resources:
    queue_url: str
    dead_letter_url: str
    notice_url: str
    topic_arn: str


def create_resources(aws: Any, env: dict[str, str]) -> tuple[Resources, list[str]]:
    """Bucket, queues, topic and (with the igata CLI) tables; returns them and the CLI's lines."""
    s3, sqs, sns = aws.client("s3"), aws.client("sqs"), aws.client("sns")
    s3.create_bucket(Bucket=BUCKET)
    dead_letter_url = sqs.create_queue(QueueName=DEAD_LETTER_QUEUE)["QueueUrl"]
    queue_url = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": _queue_arn(sqs, dead_letter_url),
                    "maxReceiveCount": str(MAX_RECEIVE_COUNT),
                }
            ),
        },
    )["QueueUrl"]
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
    # SNS is always moto's, and moto delivers only into its own queues: the demo's notice
    # queue lives there even when igata's queues are on a strict emulator.
    notices = aws.client("sqs", on_moto=True)
    notice_url = notices.create_queue(QueueName=NOTICE_QUEUE)["QueueUrl"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=_queue_arn(notices, notice_url))

    done = subprocess.run(
        [*IGATA, "dynamodb", "create-tables"],
        env=env, cwd=_REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoFailed(
            f"`igata dynamodb create-tables` exited with {done.returncode}:\n"
            f"{done.stdout}{done.stderr}"
        )
    return Resources(queue_url, dead_letter_url, notice_url, topic_arn), done.stdout.split("\n")


def upload_inputs(
    aws: Any, workdir: Path, count: int, split: Any
) -> tuple[dict[str, int], dict[str, str]]:
    """Write and upload ``count`` digit PNGs and the two bad ones; names -> labels, bad keys."""
    from examples.digits.images import write_bad_inputs, write_test_pngs

    images = workdir / "images"
    written = write_test_pngs(images, count, split=split)
    corrupt, truncated = write_bad_inputs(workdir / "bad")
    uploads = {image_key(p.name): p for p in written}
    bad_keys = {"corrupt": f"bad/{corrupt.name}", "truncated": f"bad/{truncated.name}"}
    uploads.update({bad_keys["corrupt"]: corrupt, bad_keys["truncated"]: truncated})
    s3 = aws.client("s3")

    def put(item: tuple[str, Path]) -> None:
        key, path = item
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ContentType="image/png")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, uploads.items()))
    return {p.name: label for p, label in written.items()}, bad_keys


def queue_requests(aws: Any, plan: Plan, queue_url: str) -> dict[str, Message]:
    """Pre-create REQUESTS items (state 'queued'), then send; returns message id -> message."""
    table = _dynamodb_resource(aws).Table(REQUESTS_TABLE)
    with table.batch_writer() as batch:
        for request in plan.requests:
            batch.put_item(Item={**request.fields, "request_id": request.request_id,
                                 "state": "queued", "queued_at": int(time.time())})  # fmt: skip
    sqs = aws.client("sqs")
    sent: dict[str, Message] = {}
    for start in range(0, len(plan.messages), 10):
        chunk = plan.messages[start : start + 10]
        reply = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": m.body} for i, m in enumerate(chunk)],
        )
        if reply.get("Failed"):
            raise DemoFailed(f"sqs: could not send the demo's messages: {reply['Failed']}")
        for entry in reply["Successful"]:
            sent[entry["MessageId"]] = chunk[int(entry["Id"])]
    return sent


def worker_arguments(errors: Path, batch_size: int) -> list[str]:
    """One worker's ``igata`` arguments (run through this interpreter: ``IGATA + arguments``)."""
    return [
        "run",
        "--source", "sqs", "--sink", "dynamodb",
        "--predictor", "examples.digits:DigitsPredictor",
        "--source-opt", f"idle_timeout={IDLE_TIMEOUT}",
        "--source-opt", "notice_format=detailed",
        "--batch-size", str(batch_size),
        "--errors", str(errors),
    ]  # fmt: skip


def base_env(aws: Any) -> dict[str, str]:
    """The local endpoint, credentials and table names, on a minimal inherited environment."""
    env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    env.update(aws.env())
    env["OUTPUT_CTXMGR_REQUESTS_TABLENAME"] = REQUESTS_TABLE
    env["OUTPUT_CTXMGR_RESULTS_TABLENAME"] = RESULTS_TABLE
    # The predictor is imported by name in the workers; `examples` is not an installed package.
    env["PYTHONPATH"] = str(_REPO_ROOT)
    return env


def run_workers(
    count: int, env: dict[str, str], workdir: Path, batch_size: int
) -> tuple[list[int], float, list[Path], list[Path]]:
    """Start the workers, wait for all to exit; exit codes, seconds, logs, errors files."""
    procs, logs, errors = [], [], []
    started = time.monotonic()
    for number in range(1, count + 1):
        log_path = workdir / f"worker-{number}.log"
        errors_path = workdir / f"worker-{number}-errors.jsonl"
        with open(log_path, "wb") as log:
            procs.append(
                subprocess.Popen(
                    [*IGATA, *worker_arguments(errors_path, batch_size)],
                    env=env,
                    cwd=_REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        logs.append(log_path)
        errors.append(errors_path)
    deadline = started + WORKER_TIMEOUT
    codes: list[int] = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        raise DemoFailed(
            f"the workers did not drain the queue within {WORKER_TIMEOUT} s\n{_log_tails(logs)}"
        ) from None
    return codes, time.monotonic() - started, logs, errors


def observe(aws: Any, resources: Resources, codes: list[int], errors: list[Path]) -> Observed:
    dynamodb = _dynamodb_resource(aws)
    requests = {}
    for item in _scan(dynamodb.Table(REQUESTS_TABLE)):
        item = _plain(item)
        for key in ("errors", "result"):
            if isinstance(item.get(key), str):
                item[key] = json.loads(item[key])
        requests[item["request_id"]] = item
    results = [_plain(item) for item in _scan(dynamodb.Table(RESULTS_TABLE))]

    sqs = aws.client("sqs")
    dead_letters = {m["MessageId"]: m["Body"] for m in _drain(sqs, resources.dead_letter_url)}
    attributes = sqs.get_queue_attributes(
        QueueUrl=resources.queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    counts = (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )
    notices = []
    for message in _drain(aws.client("sqs", on_moto=True), resources.notice_url):
        notification = json.loads(message["Body"])  # SNS's envelope (no raw delivery)
        notices.extend(json.loads(notification["Message"]))
    worker_errors = []
    for path in errors:
        if path.exists():
            worker_errors += [json.loads(x) for x in path.read_text("utf-8").splitlines() if x]
    return Observed(codes, requests, results, dead_letters, counts, notices, worker_errors)


# -- the report -------------------------------------------------------------------------------


def report(
    plan: Plan, sent: dict[str, Message], seen: Observed, check: Check, seconds: float,
    summaries: list[str],
) -> None:  # fmt: skip
    states_after = Counter(str(item.get("state")) for item in seen.requests.values())
    print("\nReport")
    print(
        f"  requests: {len(plan.requests)} sent ({len(plan.good)} digits, {len(plan.bad)} bad) "
        f"in {len(sent)} messages; REQUESTS states: queued {len(plan.requests)} -> "
        + ", ".join(f"{state} {n}" for state, n in sorted(states_after.items()))
    )
    print(f"  RESULTS items: {len(seen.results)} (one per completed request)")
    print("  sample results:")
    results = {str(r.get("request_id")): r for r in seen.results}
    for request in plan.good[:5]:
        result = results.get(request.request_id, {})
        state = seen.requests.get(request.request_id, {}).get("state")
        print(
            f"    {request.request_id}  {request.fields['s3_uri']}  true {request.label}  "
            f"predicted {result.get('label', '-')} ({float(result.get('confidence', 0)):.2f})  "
            f"{state}"
        )
    print(
        f"  accuracy: {check.accuracy:.3f} ({check.correct} of {check.completed} "
        f"completed requests right; at least {MIN_ACCURACY} required)"
    )
    if check.misclassified:
        more = len(check.misclassified) - 3
        print(
            f"    misclassified: {', '.join(check.misclassified[:3])}"
            + (f" and {more} more" if more > 0 else "")
        )
    print("  error records (REQUESTS state and errors):")
    for request in plan.bad:
        item = seen.requests.get(request.request_id, {})
        last = (item.get("errors") or [{}])[-1]
        print(
            f"    {request.request_id} [{request.flaw}]: {item.get('state')}, attempt "
            f"{last.get('attempt', '?')}: {last.get('stage')}: {last.get('error_type')}: "
            f"{_short(str(last.get('message')), 300)}"
        )
    print(f"  dead-letter queue {DEAD_LETTER_QUEUE}: {len(seen.dead_letters)} message(s)")
    for message_id, body in sorted(seen.dead_letters.items()):
        print(f"    {message_id}: {_why_dead(message_id, body, sent, seen)}")
    visible, in_flight, delayed = seen.queue_counts
    print(f"  request queue {QUEUE}: {visible} visible, {in_flight} in flight, {delayed} delayed")
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(check.notices_by_status.items()))
    print(
        f"  SNS notices on {TOPIC}: {len(seen.notices)} request entries ({statuses or 'none'})"
        + (f", {check.duplicate_notices} repeated" if check.duplicate_notices else "")
    )
    working = max(seconds - IDLE_TIMEOUT, 1e-9)
    print(
        f"  throughput: {check.completed} requests completed by {len(seen.exit_codes)} "
        f"worker(s) in {working:.1f} s = {check.completed / working:.1f} requests/s "
        f"(worker start-up and the retries of the failing messages included, the final "
        f"{IDLE_TIMEOUT} s idle wait not)"
    )
    for number, summary in enumerate(summaries, 1):
        print(f"    worker {number}: exit {seen.exit_codes[number - 1]}; {summary}")


def _why_dead(message_id: str, body: str, sent: dict[str, Message], seen: Observed) -> str:
    message = sent.get(message_id)
    if message is None:
        return f"not sent by this demo: {_short(body, 60)}"
    if message.malformed:
        reasons = [
            f"{e.get('stage')}: {e.get('message')}"
            for e in seen.worker_errors
            if e.get("identity") == f"sqs:{message_id}"
        ]
        reason = reasons[-1] if reasons else "its body is not a request list"
        return f"malformed body {_short(body, 40)!r}; {_short(reason, 200)}"
    failed = [r.request_id for r in message.requests if not r.good]
    return (
        f"{len(message.requests)} requests, {len(failed)} failed ({', '.join(failed)}); "
        f"a message is retried whole, so after {MAX_RECEIVE_COUNT} receives it was "
        f"dead-lettered (its {len(message.requests) - len(failed)} good requests are completed)"
    )


# -- the whole demo ---------------------------------------------------------------------------


def run_demo(workdir: Path, *, count: int, workers: int, batch_size: int) -> int:
    from examples.digits.model import MODEL_PATH_ENV, load_split, save_model, train_model
    from igata_core.testing.aws import start_local_aws, strict_endpoints_from_env

    started = time.monotonic()
    split = load_split()
    model = train_model(split)
    model_path = save_model(model, workdir / "digits.joblib")
    test_features = split.test_images.reshape(len(split.test_images), -1)
    print(
        f"igata demo: an SQS -> DynamoDB worker job on a local AWS (working dir {workdir})\n"
        f"  trained the digits model in {time.monotonic() - started:.1f} s (accuracy "
        f"{model.score(test_features, split.test_labels):.3f} on the {len(split.test_labels)} "
        "test images)"
    )
    aws = start_local_aws(strict_endpoints_from_env())
    try:
        strict = "".join(
            f"; {service} on a strict emulator at {aws.url_for(service)}"
            for service in sorted(aws.strict)
        )
        print(f"  local AWS: moto server at {aws.url}{strict}")
        env = base_env(aws)
        resources, created = create_resources(aws, env)
        print(
            f"  created bucket {BUCKET}; queue {QUEUE} (VisibilityTimeout {VISIBILITY_TIMEOUT} "
            f"s, to {DEAD_LETTER_QUEUE} after {MAX_RECEIVE_COUNT} receives); topic {TOPIC} -> "
            f"queue {NOTICE_QUEUE}; `igata dynamodb create-tables`: "
            + "; ".join(line for line in created if line.strip())
        )
        images, bad_keys = upload_inputs(aws, workdir, count, split)
        plan = build_plan(images, bad_keys, resources.topic_arn)
        sent = queue_requests(aws, plan, resources.queue_url)
        print(
            f"  uploaded {len(images)} digit PNGs and {len(bad_keys)} bad ones; "
            f"{len(plan.requests)} REQUESTS items pre-created as 'queued'; sent {len(sent)} "
            f"messages (up to {REQUESTS_PER_MESSAGE} requests each; the first also holds the "
            f"{len(plan.bad)} bad requests; one body is not JSON)"
        )

        env.update(
            {
                "INPUT_CTXMANAGER_SQS_QUEUE_URL": resources.queue_url,
                "REQUESTS_COMPLETE_SNS_TOPIC_ARN": resources.topic_arn,
                "SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION": str(RETRY_DELAY),
                MODEL_PATH_ENV: str(model_path),
            }
        )
        shown = worker_arguments(workdir / "worker-N-errors.jsonl", batch_size)
        print(f"  running {workers} worker(s): igata {shlex.join(shown)}", flush=True)
        codes, seconds, logs, errors = run_workers(workers, env, workdir, batch_size)
        print(f"  workers exited with {', '.join(map(str, codes))} after {seconds:.1f} s")

        seen = observe(aws, resources, codes, errors)
    finally:
        aws.stop()
    check = evaluate(plan, sent, seen)
    summaries = [_summary(path) for path in logs]
    report(plan, sent, seen, check, seconds, summaries)
    print(f"  total time: {time.monotonic() - started:.1f} s")
    if check.problems:
        print("demo FAILED:")
        for problem in check.problems:
            print(f"  - {problem}")
        print(_log_tails(logs))
        return 1
    print("demo OK")
    return 0


def _log_tails(logs: list[Path], lines: int = 15) -> str:
    parts = []
    for path in logs:
        text = path.read_text("utf-8", errors="replace") if path.exists() else ""
        parts.append(f"--- last lines of {path.name} ---\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts)


def _queue_arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]


def _dynamodb_resource(aws: Any) -> Any:
    import boto3

    from igata_core.testing.aws import FAKE_AWS_ENV

    return boto3.resource(
        "dynamodb",
        endpoint_url=aws.url_for("dynamodb"),
        region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def _scan(table: Any) -> Iterator[dict[str, Any]]:
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        yield from page["Items"]
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB's Decimals as floats, for printing and comparing."""
    from decimal import Decimal

    return {k: float(v) if isinstance(v, Decimal) else v for k, v in item.items()}


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message of a queue (kept invisible while the demo reads the rest)."""
    messages: dict[str, dict[str, Any]] = {}
    while True:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=0
        ).get("Messages", [])
        if not batch:
            return list(messages.values())
        for message in batch:
            messages[message["MessageId"]] = message


def _summary(log: Path) -> str:
    found = _SUMMARY_LINE.findall(log.read_text("utf-8", errors="replace")) if log.exists() else []
    return found[-1] if found else "no summary line in its log"


def _short(text: str, limit: int = 150) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Run the main job end to end on a local AWS: SQS requests for digit "
        "images on S3, `igata run --source sqs --sink dynamodb` workers, a report.",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        help=f"Number of digit images to classify, 1-450 (default {DEFAULT_COUNT}).",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help=f"Number of worker processes, 1-{MAX_WORKERS} (default 2).",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="The workers' --batch-size (default 32)."
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="Keep the working directory (model, images, worker logs and errors files) in "
        "DIR, which must be new or empty (default: a temporary directory, removed at the end).",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 450:
        parser.error("--count must be between 1 and 450 (the digits test split)")
    if not 1 <= args.workers <= MAX_WORKERS:
        parser.error(f"--workers must be between 1 and {MAX_WORKERS}")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    settings = {"count": args.count, "workers": args.workers, "batch_size": args.batch_size}
    try:
        if args.keep is not None:
            workdir = args.keep.resolve()
            if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
                raise DemoError(
                    f"demo: --keep {args.keep}: not a new or empty directory; choose another"
                )
            workdir.mkdir(parents=True, exist_ok=True)
            return run_demo(workdir, **settings)
        with tempfile.TemporaryDirectory(prefix="igata-demo-") as tmp:
            return run_demo(Path(tmp), **settings)
    except DemoError as exc:
        print(exc, file=sys.stderr)
        return 2
    except DemoFailed as exc:
        print(f"demo FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
