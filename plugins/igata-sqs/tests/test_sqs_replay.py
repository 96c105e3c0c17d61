"""``igata replay``: selective moves out of a dead-letter queue, against a moto server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import click
import pytest
from click.testing import CliRunner

from igata_core.testing import run_pipeline
from igata_sqs.replay import (
    DeadLetter,
    ErrorsFile,
    Filters,
    Replayer,
    Selector,
    Settings,
    TokenBucket,
    parse_rate,
    parse_since,
    replay,
)


def invoke(*args):
    return CliRunner().invoke(replay, list(args), catch_exceptions=False)


def bodies(messages):
    return sorted(m["Body"] for m in messages)


def fill(queues, url, texts, **kwargs):
    return {text: queues.send(url, text, **kwargs) for text in texts}


@pytest.fixture
def pair(queues):
    """A plain dead-letter queue and a target queue."""
    return queues.create("dlq"), queues.create("target")


# -- parsing ---------------------------------------------------------------------------------------


def test_since_accepts_iso_times_and_ages():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("45s", now) == now - timedelta(seconds=45)
    assert parse_since("2024-05-01T09:30:00Z") == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert parse_since("2024-05-01T18:30:00+09:00") == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert parse_since("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC), "no zone means UTC"
    with pytest.raises(click.BadParameter, match="neither an ISO 8601 time"):
        parse_since("yesterday")


def test_rate_accepts_per_second_minute_and_bare_numbers():
    assert parse_rate("5/s") == 5
    assert parse_rate("120/m") == 2
    assert parse_rate("2.5") == 2.5
    for bad in ("0/s", "fast", "-1", "5/d"):
        with pytest.raises(click.BadParameter, match="not a positive rate"):
            parse_rate(bad)


def test_token_bucket_spaces_messages_from_the_first_one():
    now = [0.0]

    def pause(seconds):
        now[0] += seconds
        return True

    bucket = TokenBucket(rate=5, capacity=5, clock=lambda: now[0])
    for _ in range(6):
        assert bucket.take(1, pause)
    assert now[0] == pytest.approx(1.0), "6 messages at 5/s: the last one 1 s after the first"
    assert bucket.take(5, pause) and now[0] == pytest.approx(2.0)
    stopped = TokenBucket(1, 1, clock=lambda: 0.0)
    assert stopped.take(1, lambda s: False)  # the first token is there at once
    assert not stopped.take(1, lambda s: False), "a pause that gives up ends the wait"


def test_errors_file_keeps_the_last_attempt_of_each_request(tmp_path):
    path = tmp_path / "errors.jsonl"
    lines = [
        {"identity": "r-1", "input": "s3://b/1", "stage": "load", "error_type": "NoSuchKey",
         "message": "gone", "attempt": 1},
        {"identity": "r-1", "input": "s3://b/1", "stage": "predict", "error_type": "ValueError",
         "message": "bad pixel", "attempt": 2},
        {"identity": "sqs:m-9", "input": "sqs:m-9", "stage": "parse", "error_type": "BodyError",
         "message": "body is not JSON", "attempt": 3},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    letters = [
        DeadLetter({"MessageId": "m-1", "Body": '[{"request_id": "r-1"}]'}, "request_id"),
        DeadLetter({"MessageId": "m-9", "Body": "{not json"}, "request_id"),
    ]
    assert ErrorsFile([path]).errors_of(letters) == {
        "m-1": [("r-1 (errors file)", "predict: ValueError: bad pixel")],
        "m-9": [("sqs:m-9 (errors file)", "parse: BodyError: body is not JSON")],
    }
    (tmp_path / "broken.jsonl").write_text('{"identity": "x"}\nnot json\n')
    with pytest.raises(click.ClickException, match="line 2 of the errors file"):
        ErrorsFile([tmp_path / "broken.jsonl"])


# -- selecting and moving --------------------------------------------------------------------------


def test_filters_select_and_the_rest_is_visible_again_at_once(queues, pair):
    dlq, target = pair
    fill(queues, dlq, ['[{"image_id": "a-1", "kind": "cat"}]', '[{"image_id": "a-2"}]'])
    for body, tenant in (
        ('[{"image_id": "b-1", "kind": "Cat"}]', "acme-corp"),
        ('[{"image_id": "b-2"}]', "other"),
    ):
        attributes = {"tenant": {"DataType": "String", "StringValue": tenant}}
        queues.send(dlq, body, MessageAttributes=attributes)

    result = invoke("--from-dlq", dlq, "--to", target, "--filter-body", '"kind": "cat"')
    assert result.exit_code == 0, result.output
    assert bodies(queues.drain(target)) == [
        '[{"image_id": "a-1", "kind": "cat"}]',
        '[{"image_id": "b-1", "kind": "Cat"}]',
    ], "body text matches regardless of case"
    assert "replay: scanned 4, matched 2, moved 2, failed 0, left in the DLQ 2" in result.stdout
    assert queues.counts(dlq) == (2, 0), "not selected: visible again right after the scan"

    result = invoke("--from-dlq", dlq, "--to", target, "--filter-attribute", "tenant=ACME")
    assert result.exit_code == 0, result.output
    assert bodies(queues.drain(target)) == []  # b-1 (tenant acme-corp) was moved already
    result = invoke("--from-dlq", dlq, "--to", target, "--filter-attribute", "tenant",
                    "--filter-body", "b-")  # fmt: skip
    assert bodies(queues.drain(target)) == ['[{"image_id": "b-2"}]'], "all filter kinds must match"
    assert bodies(queues.drain(dlq)) == ['[{"image_id": "a-2"}]']


def test_dry_run_lists_what_would_move_and_moves_nothing(queues, pair):
    dlq, target = pair
    ids = fill(queues, dlq, [
        json.dumps([{"request_id": f"r-{i}", "image_id": f"i-{i}"} for i in range(5)]),
        json.dumps([{"image_id": "solo", "note": "retry me"}]),
        "not json at all",
    ])  # fmt: skip
    result = invoke("--from-dlq", dlq, "--to", target, "--dry-run", "--filter-body", "r-0",
                    "--filter-body", "retry me")  # fmt: skip
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if line.startswith("would move")]
    assert len(listed) == 2
    first = next(line for line in listed if ids[json.dumps(
        [{"request_id": f"r-{i}", "image_id": f"i-{i}"} for i in range(5)])] in line)  # fmt: skip
    assert "requests r-0, r-1, r-2 (+2 more)" in first and "body contains 'r-0'" in first
    assert re.search(r"sent \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first)
    assert any("requests solo" in line and "'retry me'" in line for line in listed)
    assert "replay (dry run): scanned 3, matched 2 (would move), moved 0" in result.stdout
    assert queues.counts(target) == (0, 0)
    assert queues.counts(dlq) == (3, 0), "everything visible again, nothing moved"


def test_since_compares_with_the_send_time(queues, pair):
    dlq, target = pair
    before_old = datetime.now(UTC) - timedelta(seconds=0.5)
    fill(queues, dlq, ["old"])
    time.sleep(1.2)
    fill(queues, dlq, ["new-1", "new-2"])
    result = invoke("--from-dlq", dlq, "--to", target, "--since", "1s")
    assert result.exit_code == 0, result.output
    assert bodies(queues.drain(target)) == ["new-1", "new-2"]
    result = invoke("--from-dlq", dlq, "--to", target, "--dry-run",
                    "--since", before_old.isoformat())  # fmt: skip
    assert "matched 1 (would move)" in result.stdout
    assert f"sent at or after {before_old:%Y-%m-%dT%H:%M:%SZ}" in result.stdout
    assert bodies(queues.drain(dlq)) == ["old"]


def test_rate_limits_the_moves(queues, pair):
    dlq, target = pair
    fill(queues, dlq, [f"m-{i}" for i in range(6)])
    started = time.monotonic()
    result = invoke("--from-dlq", dlq, "--to", target, "--rate", "5/s")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert elapsed >= 0.95, f"6 messages at 5/s took {elapsed:.2f} s"
    assert len(queues.drain(target)) == 6


def test_max_stops_after_n_matching_messages(queues, pair):
    dlq, target = pair
    fill(queues, dlq, [f"m-{i}" for i in range(7)])
    result = invoke("--from-dlq", dlq, "--to", target, "--max", "3")
    assert result.exit_code == 0, result.output
    assert "matched 3, moved 3" in result.stdout
    assert len(queues.drain(target)) == 3 and len(queues.drain(dlq)) == 4


def test_body_attributes_and_trace_header_are_preserved(aws, queues, pair, recorder):
    dlq, target = pair
    attributes = {
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "priority": {"DataType": "Number", "StringValue": "7"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xffraw"},
        "trace.kind": {"DataType": "String.custom", "StringValue": "x"},
    }
    body = '[{"image_id": "ü-1", "s3_uri": "s3://b/k"}]'
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    queues.send(
        dlq, body, MessageAttributes=attributes,
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}},
    )  # fmt: skip
    client = recorder(aws.client("sqs"))
    summary = Replayer(
        client, dlq, target, Selector(Filters()), Settings(),
        target_fifo=False, say=lambda text, err: None,
    ).run()  # fmt: skip
    assert summary.moved == 1
    (moved,) = queues.drain(target)
    assert moved["Body"] == body
    assert moved["MessageAttributes"] == attributes
    assert int(moved["Attributes"]["ApproximateReceiveCount"]) == 1, "a fresh message"
    # moto's SendMessageBatch drops system attributes: check what was sent.
    (send,) = [kwargs for name, kwargs, _ in client.events if name == "send_message_batch"]
    assert send["Entries"][0]["MessageSystemAttributes"] == {
        "AWSTraceHeader": {"DataType": "String", "StringValue": trace}
    }


def test_a_message_the_target_refuses_stays_in_the_dead_letter_queue(queues, sqs, pair):
    dlq, _ = pair
    small = sqs.create_queue(QueueName="small", Attributes={"MaximumMessageSize": "1024"})[
        "QueueUrl"
    ]
    fill(queues, dlq, ["fits-1", "x" * 2000, "fits-2"])
    result = invoke("--from-dlq", dlq, "--to", small)
    assert result.exit_code == 1, result.output
    assert bodies(queues.drain(small)) == ["fits-1", "fits-2"], "the batch's other messages move"
    assert "not moved to small" in result.stderr and "1024" in result.stderr
    assert "moved 2, failed 1, left in the DLQ 1" in result.stdout
    assert queues.counts(dlq) == (1, 0)
    assert bodies(queues.drain(dlq)) == ["x" * 2000]


def test_per_entry_send_failures_are_retried_then_left(aws, queues, pair, recorder):
    """Entries SQS fails on its side are sent again; the ones that keep failing stay."""
    dlq, target = pair
    fill(queues, dlq, ["ok", "flaky", "down"])

    class Flaky(recorder):
        def send_message_batch(self, **kwargs):
            refused = {"down"} | ({"flaky"} if not self.events else set())
            keep = [e for e in kwargs["Entries"] if e["MessageBody"] not in refused]
            result = self._client.send_message_batch(**{**kwargs, "Entries": keep}) if keep else {}
            failed = [
                {"Id": e["Id"], "Code": "InternalError", "Message": "try again",
                 "SenderFault": False}
                for e in kwargs["Entries"] if e["MessageBody"] in refused
            ]  # fmt: skip
            self.events.append(("send_message_batch", kwargs, result))
            return {"Successful": result.get("Successful", []), "Failed": failed}

    client = Flaky(aws.client("sqs"))
    lines = []
    summary = Replayer(
        client, dlq, target, Selector(Filters()), Settings(),
        target_fifo=False, say=lambda text, err: lines.append(text),
    ).run()  # fmt: skip
    assert (summary.moved, summary.failed, summary.exit_code) == (2, 1, 1)
    assert bodies(queues.drain(target)) == ["flaky", "ok"]
    assert bodies(queues.drain(dlq)) == ["down"]
    assert any("InternalError: try again (after 3 attempts)" in line for line in lines)


def test_a_failed_delete_is_reported_and_exits_1(aws, queues, pair, recorder):
    dlq, target = pair
    fill(queues, dlq, ["a", "b"])

    class NoDeletes(recorder):
        def delete_message_batch(self, **kwargs):
            raise ConnectionError("connection reset")

    lines = []
    summary = Replayer(
        NoDeletes(aws.client("sqs")), dlq, target, Selector(Filters()), Settings(),
        target_fifo=False, say=lambda text, err: lines.append(text),
    ).run()  # fmt: skip
    assert (summary.moved, summary.not_deleted, summary.exit_code) == (2, 2, 1)
    assert "left in the DLQ 2, in both queues 2" in summary.line()
    assert sum("is now in both queues" in line for line in lines) == 2
    assert bodies(queues.drain(target)) == ["a", "b"]


def test_an_sqs_outage_stops_the_replay_with_exit_3_and_releases_everything(
    aws, queues, pair, recorder
):
    dlq, target = pair
    fill(queues, dlq, ["a", "b", "c"])

    class TargetDown(recorder):
        def send_message_batch(self, **kwargs):
            raise ConnectionError("connection refused")

    summary = Replayer(
        TargetDown(aws.client("sqs")), dlq, target, Selector(Filters()), Settings(),
        target_fifo=False, say=lambda text, err: None,
    ).run()  # fmt: skip
    assert summary.exit_code == 3
    assert "cannot send to queue target" in (summary.stopped or "")
    assert summary.moved == 0 and queues.counts(dlq) == (3, 0)


def test_scan_visibility_is_renewed_while_a_slow_replay_runs(aws, queues, pair, recorder):
    dlq, target = pair
    fill(queues, dlq, [f"keep-{i}" for i in range(4)] + [f"move-{i}" for i in range(6)])
    client = recorder(aws.client("sqs"))
    summary = Replayer(
        client, dlq, target, Selector(Filters(body=("move-",))),
        Settings(rate=3, scan_visibility=2), target_fifo=False, say=lambda text, err: None,
    ).run()  # fmt: skip
    assert summary.stopped is None, summary.stopped
    assert (summary.scanned, summary.moved) == (10, 6), "each message scanned once"
    assert any(
        name == "change_message_visibility_batch"
        and {e["VisibilityTimeout"] for e in kwargs["Entries"]} == {2}
        for name, kwargs, _ in client.events
    ), "held messages were extended"
    assert queues.counts(dlq) == (4, 0)


# -- FIFO ------------------------------------------------------------------------------------------


def fifo_pair(sqs, target_attributes=None):
    dlq = sqs.create_queue(QueueName="dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    target = sqs.create_queue(
        QueueName="target.fifo", Attributes={"FifoQueue": "true", **(target_attributes or {})}
    )["QueueUrl"]
    return dlq, target


def send_groups(sqs, url, groups):
    for group, texts in groups.items():
        for text in texts:
            # A deduplication id SQS accepts (1-128 characters), however long the body.
            dedup = hashlib.sha256(f"{group}-{text}".encode()).hexdigest()
            sqs.send_message(
                QueueUrl=url, MessageBody=text, MessageGroupId=group,
                MessageDeduplicationId=dedup,
            )  # fmt: skip


def test_fifo_replay_keeps_groups_and_their_order(sqs, queues):
    dlq, target = fifo_pair(sqs)
    send_groups(sqs, dlq, {"g1": ["a1", "a2", "a3"], "g2": ["b1", "b2"]})
    result = invoke("--from-dlq", dlq, "--to", target)
    assert result.exit_code == 0, result.output
    moved = queues.drain(target)
    by_group = {}
    for message in moved:
        by_group.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])
    assert by_group == {"g1": ["a1", "a2", "a3"], "g2": ["b1", "b2"]}
    assert all(m["Attributes"]["MessageDeduplicationId"].startswith("igata-replay-") for m in moved)


def test_fifo_group_stops_at_a_message_that_cannot_move(sqs, queues):
    dlq, target = fifo_pair(sqs, {"MaximumMessageSize": "1024"})
    send_groups(sqs, dlq, {"g1": ["a1", "a2" + "x" * 2000, "a3"], "g2": ["b1", "b2"]})
    result = invoke("--from-dlq", dlq, "--to", target)
    assert result.exit_code == 1, result.output
    assert bodies(queues.drain(target)) == ["a1", "b1", "b2"]
    assert "an earlier message of its group was not moved" in result.stderr
    left = queues.drain(dlq)
    assert [m["Body"][:2] for m in left] == ["a2", "a3"], "the group stays whole and in order"


def test_fifo_deduplication_ids_are_always_valid(sqs):
    """The replay's deduplication id is derived from the DLQ message id: one SQS would refuse
    (over 128 characters, or other characters) is hashed, the same id to the same hash."""
    from igata_sqs.limits import valid_fifo_id
    from igata_sqs.replay.letters import DeadLetter

    dlq, target = fifo_pair(sqs)
    replayer = Replayer(
        sqs, dlq, target, Selector(Filters()), Settings(),
        target_fifo=True, say=lambda text, err: None,
    )  # fmt: skip
    ids = []
    for message_id in ("a" * 36, "m" * 120, "id with spaces", "ü-1"):
        message = {"MessageId": message_id, "ReceiptHandle": "h", "Body": "x",
                   "Attributes": {"MessageGroupId": "g"}}  # fmt: skip
        entry = replayer._entry("0", DeadLetter(message, "request_id"))
        assert valid_fifo_id(entry["MessageDeduplicationId"]), entry
        assert entry == replayer._entry("0", DeadLetter(message, "request_id"))
        ids.append(entry["MessageDeduplicationId"])
    assert ids[0] == "igata-replay-" + "a" * 36, "a valid id is kept as it is"
    assert len(set(ids)) == 4


def test_fifo_target_needs_a_fifo_dead_letter_queue(sqs, queues):
    _, target = fifo_pair(sqs)
    dlq = queues.create("plain-dlq")
    queues.send(dlq, "x")
    result = invoke("--from-dlq", dlq, "--to", target)
    assert result.exit_code == 2 and "no message group" in result.output
    assert queues.counts(dlq) == (1, 0)


# -- the target ------------------------------------------------------------------------------------


def test_target_defaults_to_the_only_source_queue(queues, sqs):
    source = queues.create("requests", max_receive=2)
    dlq = queues.dead_letter[source]
    queues.send(dlq, "back home")
    result = invoke("--from-dlq", dlq)
    assert result.exit_code == 0, result.output
    assert f"target {source}" in result.stdout
    assert bodies(queues.drain(source)) == ["back home"]

    # A second queue dead-lettering into the same DLQ makes the target ambiguous.
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})
    sqs.create_queue(QueueName="other", Attributes={"RedrivePolicy": policy})
    queues.send(dlq, "where to?")
    result = invoke("--from-dlq", dlq)
    assert result.exit_code == 2 and "several queues use requests-dlq" in result.output
    alone = queues.create("alone")
    result = invoke("--from-dlq", alone)
    assert result.exit_code == 2 and "pass --to QUEUE_URL" in result.output
    assert queues.counts(dlq) == (1, 0)


def test_usage_errors_exit_2_before_touching_a_message(queues, pair, tmp_path):
    dlq, target = pair
    queues.send(dlq, "x")
    cases = [
        (["--filter-error", "Timeout"], "--filter-error needs the recorded errors"),
        (["--errors-file", str(tmp_path / "e.jsonl")], "only read for --filter-error"),
        (["--rate", "fast"], "not a positive rate"),
        (["--since", "last week"], "neither an ISO 8601 time"),
        (["--to", dlq], "the target is the dead-letter queue itself"),
        (["--to", dlq.replace("/dlq", "/missing")], "does not exist"),
        (["--to", "target"], "is not a queue URL"),
    ]
    for extra, message in cases:
        args = ["--from-dlq", dlq, *(["--to", target] if "--to" not in extra else []), *extra]
        result = invoke(*args)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output, (extra, result.output)
    assert queues.counts(dlq) == (1, 0)


# -- processes -------------------------------------------------------------------------------------


def replay_process(aws, *args, env=None):
    environ = {**os.environ, **aws.env(), **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "igata_core", "replay", *args],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_igata_replay_runs_as_a_command_with_the_original_endpoint_variable(aws, queues, pair):
    dlq, target = pair
    fill(queues, dlq, ["a", "b", "c"])
    process = replay_process(
        aws, "--from-dlq", dlq, "--to", target, "--filter-body", "b",
        env={"AWS_ENDPOINT_URL": "", "SQS_ENDPOINT": aws.url},
    )  # fmt: skip
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "scanned 3, matched 1, moved 1" in out
    assert bodies(queues.drain(target)) == ["b"]
    assert queues.counts(dlq) == (2, 0)


def test_ctrl_c_stops_between_moves_and_hands_everything_back(aws, queues, pair):
    dlq, target = pair
    fill(queues, dlq, [f"m-{i}" for i in range(10)])
    process = replay_process(aws, "--from-dlq", dlq, "--to", target, "--rate", "2/s")
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("moved"), line + process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "stopping after the current step" in err
    moved = len(queues.drain(target))
    assert 1 <= moved < 10
    assert queues.counts(dlq) == (10 - moved, 0), "nothing lost, nothing left hidden"


# -- end to end: dead-lettered by a worker, replayed after the fix ---------------------------------


def run_worker(url, out, predictor, **settings):
    return run_pipeline(
        "sqs", "sqs", predictor,
        source_options={"queue_url": url, "idle_timeout": 1, "wait_time_seconds": 1,
                        "retry_delay": 0},
        sink_options={"queue_url": out},
        **settings,
    )  # fmt: skip


def test_poison_message_replayed_after_the_fix_completes(queues, images, requests_for, tmp_path):
    url, out = queues.create(visibility=1, max_receive=2), queues.create("results")
    dlq = queues.dead_letter[url]
    requests = requests_for(images(3))
    requests[1]["poison"] = True
    requests[2]["s3_uri"] = "s3://images/img/missing.jpg"  # fails for another reason
    for request in requests:
        queues.send(url, [request])
    errors = tmp_path / "errors.jsonl"
    first = run_worker(url, out, "sqs_predictors:FailPoison", errors_path=str(errors))
    assert first.exit_code == 0, first.summary
    assert [r["igata_id"] for r in queues.results(out)] == ["images:0"]
    assert queues.wait_for(dlq, visible=2)[0] == 2

    dry = invoke("--from-dlq", dlq, "--filter-error", "ValueError: poisoned",
                 "--errors-file", str(errors), "--dry-run")  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert "requests images:1" in dry.stdout
    assert "error of images:1 (errors file): predict: ValueError: poisoned request" in dry.stdout
    assert "images:2" not in dry.stdout

    moved = invoke("--from-dlq", dlq, "--filter-error", "poisoned", "--errors-file", str(errors))
    assert moved.exit_code == 0, moved.output
    assert "scanned 2, matched 1, moved 1" in moved.stdout

    fixed = run_worker(url, out, "sqs_predictors:Shape")
    assert fixed.exit_code == 0 and fixed.summary["succeeded"] == 1, fixed.summary
    (result,) = queues.results(out)
    assert result["igata_id"] == "images:1" and result["poison"] is True
    (left,) = queues.drain(dlq)
    assert "missing.jpg" in left["Body"], "the other failure stays dead-lettered"


def test_filter_error_reads_the_dynamodb_requests_table(aws, queues, images, requests_for):
    pytest.importorskip("igata_dynamodb", reason="needs the dynamodb sink installed")
    from igata_dynamodb.cli import dynamodb

    made = CliRunner().invoke(
        dynamodb, ["create-tables", "--requests-table", "requests", "--results-table", "results"]
    )
    assert made.exit_code == 0, made.output
    url = queues.create(visibility=1, max_receive=2)
    dlq = queues.dead_letter[url]
    requests = requests_for(images(3))
    for i, request in enumerate(requests):
        request["request_id"] = f"req-{i}"
    requests[0]["poison"] = True
    requests[2]["poison"] = True
    queues.send(url, requests[:2])  # one message: a poisoned and a good request
    queues.send(url, [requests[2]])
    sink = {"requests_tablename": "requests", "results_tablename": "results"}
    source = {"queue_url": url, "idle_timeout": 1, "wait_time_seconds": 1, "retry_delay": 0}
    first = run_pipeline("sqs", "dynamodb", "sqs_predictors:FailPoison",
                         source_options=source, sink_options=sink)  # fmt: skip
    assert first.exit_code == 0, first.summary
    assert queues.wait_for(dlq, visible=2)[0] == 2
    ddb = aws.client("dynamodb")
    # Make one of the two dead-lettered requests look as if it failed for another reason.
    ddb.update_item(
        TableName="requests", Key={"request_id": {"S": "req-2"}},
        UpdateExpression="SET #e = :e", ExpressionAttributeNames={"#e": "errors"},
        ExpressionAttributeValues={":e": {"S": json.dumps(
            [{"stage": "load", "error_type": "AccessDenied", "message": "no"}])}},
    )  # fmt: skip

    result = invoke("--from-dlq", dlq, "--filter-error", "valueerror",
                    "--requests-table", "requests")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "scanned 2, matched 1, moved 1" in result.stdout
    assert "requests req-0, req-1" in result.stdout

    fixed = run_pipeline("sqs", "dynamodb", "sqs_predictors:Shape",
                         source_options=source, sink_options=sink)  # fmt: skip
    assert fixed.exit_code == 0 and fixed.summary["succeeded"] == 2, fixed.summary
    state = ddb.get_item(TableName="requests", Key={"request_id": {"S": "req-0"}})["Item"]
    assert state["state"]["S"] == "completed"
    (left,) = queues.drain(dlq)
    assert "req-2" in left["Body"]


def test_two_replays_at_once_move_each_message_once(aws, queues, pair):
    """Two operators scanning the same queue: each message moves once, none is lost."""
    dlq, target = pair
    fill(queues, dlq, [f"m-{i}" for i in range(20)])
    processes = [replay_process(aws, "--from-dlq", dlq, "--to", target) for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    assert bodies(queues.drain(target)) == sorted(f"m-{i}" for i in range(20))
    assert queues.counts(dlq) == (0, 0)
