"""``igata submit``: SOURCE to request messages, queued items, the cursor, every option."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time

import pytest
from igata_jobs.cli import submit
from igata_jobs.requests import request_id
from job_world import BUCKET, REQUESTS, invoke


def collection_of(output: str) -> str:
    found = re.search(r"^collection: (\S+)", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def test_prefix_becomes_requests_in_the_original_format(world):
    keys = world.objects(23)
    url = world.queue()
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url)
    assert result.exit_code == 0, result.output
    assert "(new)" in result.output
    collection = collection_of(result.output)
    assert "sent 23 requests in 3 messages" in result.output
    messages = world.drain(url)
    assert sorted(len(json.loads(m["Body"])) for m in messages) == [3, 10, 10]
    requests = [r for m in messages for r in json.loads(m["Body"])]
    assert {r["s3_uri"] for r in requests} == {f"s3://{BUCKET}/{k}" for k in keys}
    for r in requests:
        assert set(r) == {"collection_id", "image_id", "s3_uri", "request_id"}
        assert r["collection_id"] == collection
        key = r["s3_uri"].removeprefix(f"s3://{BUCKET}/")
        assert r["request_id"] == request_id(collection, BUCKET, key, None)


def test_a_second_submit_of_the_same_prefix_adds_no_message(world):
    world.objects(12)
    url = world.queue()
    first = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url)
    again = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url)
    assert again.exit_code == 0, again.output
    assert collection_of(again.output) == collection_of(first.output)
    assert "already submitted (12 requests); nothing sent" in again.output
    assert len(world.requests_in(url)) == 12


def test_restart_submits_again_as_a_new_collection(world):
    world.objects(4)
    url = world.queue()
    first = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url)
    again = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--restart")
    assert "sent 4 requests" in again.output
    assert collection_of(again.output) != collection_of(first.output)
    assert len(world.requests_in(url)) == 8


def test_collection_id_names_the_collection_and_the_ids(world):
    world.objects(3)
    url = world.queue()
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--collection-id", "events:7")
    assert result.output.startswith("collection: events:7\n")
    requests = world.requests_in(url)
    assert {r["collection_id"] for r in requests} == {"events:7"}
    assert {r["request_id"] for r in requests} == {
        request_id("events:7", BUCKET, f"photos/img-{i:04d}.jpg", None) for i in range(3)
    }


def test_requests_table_gets_a_queued_item_per_request_first(world):
    world.objects(30)
    world.tables()
    url = world.queue()
    result = invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--requests-table",
        REQUESTS,
        "--collection-id",
        "c1",
    )
    assert result.exit_code == 0, result.output
    items = world.items()
    assert len(items) == 30
    assert {i["state"] for i in items} == {"queued"}
    assert {i["collection_id"] for i in items} == {"c1"}
    assert {i["request_id"] for i in items} == {r["request_id"] for r in world.requests_in(url)}
    assert all(i["s3_uri"].startswith(f"s3://{BUCKET}/photos/") for i in items)
    # The sink's index finds them.
    found = world.ddb.query(
        TableName=REQUESTS,
        IndexName="collection_id-state-index",
        KeyConditionExpression="collection_id = :c AND #s = :q",
        ExpressionAttributeNames={"#s": "state"},
        ExpressionAttributeValues={":c": {"S": "c1"}, ":q": {"S": "queued"}},
        Select="COUNT",
    )
    assert found["Count"] == 30


def test_environment_names_the_queue_and_the_table(world):
    world.objects(5)
    world.tables()
    url = world.queue()
    env = {"INPUT_CTXMANAGER_SQS_QUEUE_URL": url, "OUTPUT_CTXMGR_REQUESTS_TABLENAME": REQUESTS}
    result = invoke(submit, f"s3://{BUCKET}/photos/", env=env)
    assert result.exit_code == 0, result.output
    assert len(world.requests_in(url)) == 5
    assert len(world.items()) == 5
    other = world.queue("other-queue")
    world.objects(2, prefix="more/")
    result = invoke(submit, f"s3://{BUCKET}/more/", env={"INPUT_CTXMGR_SQS_QUEUE_URL": other})
    assert result.exit_code == 0, result.output
    assert len(world.requests_in(other)) == 2


def test_requests_hashkey_and_state_keyname_follow_the_table(world):
    world.objects(3)
    world.tables(request_key="job_id")
    url = world.queue()
    result = invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--requests-table",
        REQUESTS,
        "--requests-hashkey",
        "job_id",
        "--state-keyname",
        "phase",
    )
    assert result.exit_code == 0, result.output
    items = world.items()
    assert {i["phase"] for i in items} == {"queued"} and "state" not in items[0]
    requests = world.requests_in(url)
    assert {i["job_id"] for i in items} == {r["job_id"] for r in requests}
    assert all(r["job_id"] == r["request_id"] for r in requests)


def test_extensions_and_pattern_filter_a_prefix(world):
    world.objects(3, suffix=".jpg")
    world.objects(2, suffix=".png", prefix="photos/png-")
    world.objects(2, suffix=".txt")
    url = world.queue()
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--extensions", "png")
    assert "sent 2 requests" in result.output
    assert all(r["s3_uri"].endswith(".png") for r in world.requests_in(url))
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--pattern", "*img-0001.*")
    assert "sent 3 requests" in result.output  # .jpg, .png and .txt
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--extensions", " , ")
    assert result.exit_code == 2


def test_per_message_and_max_message_bytes_bound_messages(world):
    world.objects(7)
    url = world.queue()
    invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--per-message", "3")
    assert sorted(len(json.loads(m["Body"])) for m in world.drain(url)) == [1, 3, 3]
    invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--per-message",
        "50",
        "--max-message-bytes",
        "1024",
        "--restart",
    )
    messages = world.drain(url)
    assert len(messages) > 1
    assert all(len(m["Body"].encode()) <= 1024 for m in messages)
    assert sum(len(json.loads(m["Body"])) for m in messages) == 7


def test_many_messages_go_in_batches_of_ten(world):
    world.objects(45)
    url = world.queue()
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--per-message", "2")
    assert "sent 45 requests in 23 messages" in result.output
    assert len(world.requests_in(url)) == 45


def test_dry_run_counts_and_shows_a_sample_and_sends_nothing(world, state_dir):
    world.objects(11)
    url = world.queue()
    result = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would send 11 requests in 2 messages" in result.output
    sample = json.loads(result.output.split("sample message:\n", 1)[1])
    assert sample[0]["s3_uri"] == f"s3://{BUCKET}/photos/img-0000.jpg"
    assert world.drain(url) == []
    assert not state_dir.exists()  # no cursor either
    assert invoke(submit, f"s3://{BUCKET}/photos/", "--dry-run").exit_code == 0  # no queue needed


def test_rate_paces_the_requests(world):
    world.objects(12)
    url = world.queue()
    started = time.monotonic()
    result = invoke(
        submit, f"s3://{BUCKET}/photos/", "--queue", url, "--rate", "20/s", "--per-message", "1"
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.5  # 11 requests after the first at 20/s
    bad = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--rate", "fast")
    assert bad.exit_code == 2 and "not a positive rate" in bad.output


def test_fifo_queue_messages_carry_group_and_deduplication_ids(world):
    world.objects(40)
    url = world.queue(fifo=True)
    result = invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--per-message",
        "2",
        "--fifo-groups",
        "3",
        "--collection-id",
        "fifo-job",
    )
    assert result.exit_code == 0, result.output
    messages = world.drain(url)
    assert len(messages) == 20
    groups = {m["Attributes"]["MessageGroupId"] for m in messages}
    assert groups <= {"fifo-job-0", "fifo-job-1", "fifo-job-2"} and len(groups) > 1
    # Deduplication ids follow the requests: a resubmission within SQS's 5-minute window
    # is dropped by SQS itself.
    for message in messages:
        ids = "\n".join(r["request_id"] for r in json.loads(message["Body"]))
        expected = hashlib.sha256(ids.encode()).hexdigest()
        assert message["Attributes"]["MessageDeduplicationId"] == expected


def test_interrupted_submit_resumes_where_it_stopped(world, monkeypatch):
    from igata_jobs import submit as module

    world.objects(60)
    world.tables()
    url = world.queue()
    sent = {"batches": 0}
    original = module.Sender.send

    def send_then_die(self, messages):
        if sent["batches"] == 2:
            raise KeyboardInterrupt
        sent["batches"] += 1
        return original(self, messages)

    monkeypatch.setattr(module.Sender, "send", send_then_die)
    args = [
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--requests-table",
        REQUESTS,
        "--per-message",
        "2",
    ]
    first = invoke(submit, *args)
    assert first.exit_code == 130
    assert "run the same command again to resume" in first.output
    monkeypatch.setattr(module.Sender, "send", original)
    again = invoke(submit, *args)
    assert again.exit_code == 0, again.output
    assert "resumed after 40 sent earlier" in again.output
    assert "sent 20 requests" in again.output
    requests = world.requests_in(url)
    # Batches sent after the one that failed, while it was in flight, are sent again: the
    # same requests (same ids) at most twice, none missing.
    assert len({r["request_id"] for r in requests}) == 60
    assert 60 <= len(requests) <= 60 + 8 * 20
    assert len({r["collection_id"] for r in requests}) == 1
    assert len(world.items()) == 60


def test_manifests_csv_jsonl_txt_local_and_on_s3(world, tmp_path):
    world.objects(4)
    url = world.queue()
    batch_ops = tmp_path / "manifest.csv"
    batch_ops.write_text(f"{BUCKET},photos/img-0000.jpg\n{BUCKET},photos/with%20space.jpg,v1\n")
    with_header = tmp_path / "header.csv"
    with_header.write_text(f"image_id,s3_uri\nimages:9,s3://{BUCKET}/photos/img-0001.jpg\n")
    lines = tmp_path / "list.jsonl"
    lines.write_text(
        json.dumps(f"s3://{BUCKET}/photos/img-0002.jpg")
        + "\n\n"
        + json.dumps({"bucket": BUCKET, "key": "photos/img-0003.jpg"})
        + "\n"
    )
    body = gzip.compress(f"s3://{BUCKET}/a.jpg\ns3://{BUCKET}/b.jpg\n".encode())
    world.s3.put_object(Bucket=BUCKET, Key="manifests/list.txt.gz", Body=body)
    result = invoke(
        submit,
        str(batch_ops),
        str(with_header),
        str(lines),
        f"s3://{BUCKET}/manifests/list.txt.gz",
        "--queue",
        url,
    )
    assert result.exit_code == 0, result.output
    assert "sent 7 requests" in result.output
    requests = {r["s3_uri"]: r for r in world.requests_in(url)}
    assert set(requests) == {
        f"s3://{BUCKET}/photos/img-0000.jpg",
        f"s3://{BUCKET}/photos/with space.jpg?versionId=v1",
        f"s3://{BUCKET}/photos/img-0001.jpg",
        f"s3://{BUCKET}/photos/img-0002.jpg",
        f"s3://{BUCKET}/photos/img-0003.jpg",
        f"s3://{BUCKET}/a.jpg",
        f"s3://{BUCKET}/b.jpg",
    }
    assert requests[f"s3://{BUCKET}/photos/img-0001.jpg"]["image_id"] == "images:9"
    versioned = requests[f"s3://{BUCKET}/photos/with space.jpg?versionId=v1"]
    assert versioned["request_id"] != request_id(
        versioned["collection_id"], BUCKET, "photos/with space.jpg", None
    )


def test_invalid_entries_are_listed_and_exit_1(world, tmp_path):
    url = world.queue()
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('"s3://job-images/ok.jpg"\nnot json\n{"bucket": "B!", "key": "k"}\n')
    result = invoke(submit, str(manifest), "s3://bad_bucket/x.jpg", "--queue", url)
    assert result.exit_code == 1
    assert "bad.jsonl line 2: not JSON" in result.output
    assert "bad.jsonl line 3: bucket name 'B!' is invalid" in result.output
    assert "sent 1 requests" in result.output and "3 invalid entries skipped" in result.output


def test_cursor_option_keeps_the_cursor_where_asked_also_on_s3(world, tmp_path):
    world.objects(3)
    url = world.queue()
    path = tmp_path / "my.cursor"
    invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--cursor", str(path))
    assert json.loads(path.read_text())["done"] is True
    on_s3 = f"s3://{BUCKET}/cursors/job-1.json"
    first = invoke(
        submit,
        f"s3://{BUCKET}/photos/",
        "--queue",
        url,
        "--cursor",
        on_s3,
        "--collection-id",
        "s3c",
    )
    assert first.exit_code == 0, first.output
    stored = json.loads(world.s3.get_object(Bucket=BUCKET, Key="cursors/job-1.json")["Body"].read())
    assert stored["done"] is True and stored["collection_id"] == "s3c"
    again = invoke(submit, f"s3://{BUCKET}/photos/", "--queue", url, "--cursor", on_s3)
    assert "nothing sent" in again.output
    assert len(world.requests_in(url)) == 6


def test_progress_is_shown_on_request(world):
    world.objects(3)
    url = world.queue()
    result = CliRunnerMixed().invoke(
        submit, [f"s3://{BUCKET}/photos/", "--queue", url, "--progress"]
    )
    assert "submit: 3 requests in 1 messages" in result.stderr
    quiet = CliRunnerMixed().invoke(
        submit, [f"s3://{BUCKET}/photos/", "--queue", url, "--no-progress", "--restart"]
    )
    assert "requests/s" not in quiet.stderr


def CliRunnerMixed():
    from click.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 keeps stderr apart by default
        return CliRunner()


@pytest.mark.parametrize("what", ["queue", "bucket", "table", "no-queue"])
def test_configuration_errors_exit_2_before_sending(world, what):
    world.objects(2)
    url = world.queue()
    args = [f"s3://{BUCKET}/photos/", "--queue", url]
    if what == "queue":
        args[2] = url.rsplit("/", 1)[0] + "/no-such-queue"
    elif what == "bucket":
        args[0] = "s3://no-such-bucket-here/photos/"
    elif what == "table":
        args += ["--requests-table", "no-such-table"]
    else:
        args = args[:1]
    result = invoke(submit, *args)
    assert result.exit_code == 2, result.output
    expected = {
        "queue": "does not exist",
        "bucket": "no-such-bucket-here",
        "table": "does not exist",
        "no-queue": "no queue",
    }[what]
    assert expected in result.output
    assert world.drain(url) == []


# -- entries SQS refuses ---------------------------------------------------------------------


def _error_items(world):
    return {i["request_id"]: i for i in world.items() if i["state"] == "error"}


def test_a_message_sqs_refuses_is_listed_recorded_and_the_rest_sent_once(world):
    """A request too large for the queue's MaximumMessageSize (1024 bytes, the least SQS
    allows; a long key is enough): SQS refuses that message. LocalStack (as AWS) says so in
    the batch's ``Failed``; moto refuses the whole SendMessageBatch call, which submit splits
    until the refused message is alone. Either way the others are sent once, the refused
    request is listed with SQS's reason, its REQUESTS item is in state error with that
    reason, and the exit status is 1. Submitting again sends nothing."""
    keys = world.objects(6)
    long_key = "photos/long-" + "x" * 700 + ".jpg"
    world.s3.put_object(Bucket=BUCKET, Key=long_key, Body=b"x")
    world.tables()
    url = world.queue(MaximumMessageSize="1024")
    args = [f"s3://{BUCKET}/photos/", "--queue", url, "--requests-table", REQUESTS]
    args += ["--per-message", "2", "--collection-id", "big"]
    result = invoke(submit, *args)
    assert result.exit_code == 1, result.output
    refused_id = request_id("big", BUCKET, long_key, None)
    line = next(x for x in result.output.splitlines() if x.startswith("submit: refused by SQS"))
    assert f"s3://{BUCKET}/{long_key} (request {refused_id})" in line
    assert "shorter than 1024 bytes" in line, line
    assert "sent 6 requests in 3 messages" in result.output
    assert "1 requests refused by SQS, not sent (recorded as errors in REQUESTS)" in result.output
    requests = world.requests_in(url)
    assert sorted(r["s3_uri"] for r in requests) == sorted(f"s3://{BUCKET}/{k}" for k in keys)
    items = world.items()
    assert len(items) == 7
    errors = _error_items(world)
    assert list(errors) == [refused_id]
    (error,) = json.loads(errors[refused_id]["errors"])
    assert error["stage"] == "submit" and error["error_type"] == "SendRefused"
    assert "shorter than 1024 bytes" in error["message"]
    again = invoke(submit, *args)
    assert again.exit_code == 0, again.output
    assert "already submitted (6 requests, 1 refused by SQS); nothing sent" in again.output
    assert world.requests_in(url) == []


def test_a_key_sqs_could_not_carry_raw_is_sent_escaped(world):
    """SQS (AWS, LocalStack) refuses U+FFFE and other non-characters in a message body;
    submit's bodies are ASCII JSON, so such a key travels escaped and is not refused."""
    world.objects(0)
    url = world.queue()
    key = "photos/odd-\ufffe-name.jpg"
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    result = invoke(submit, f"s3://{BUCKET}/{key}", "--queue", url)
    assert result.exit_code == 0, result.output
    (message,) = world.drain(url)
    assert "\\ufffe" in message["Body"]
    assert json.loads(message["Body"])[0]["s3_uri"] == f"s3://{BUCKET}/{key}"


class _RefusingSqs:
    """A stub SQS client (narrow: only what submit calls) that refuses the messages
    holding a request whose key contains ``refuse-me``, either in ``Failed`` (AWS,
    LocalStack) or by refusing the whole call (moto); its first call also fails one other
    entry on SQS's side (an outage: sent again). Records what it accepted."""

    def __init__(self, whole_call: bool):
        self.whole_call = whole_call
        self.accepted: list[str] = []
        self.calls = 0

    def send_message_batch(self, QueueUrl, Entries):
        from botocore.exceptions import ClientError

        self.calls += 1
        bad = [e for e in Entries if "refuse-me" in e["MessageBody"]]
        if bad and self.whole_call:
            raise ClientError(
                {
                    "Error": {
                        "Code": "InvalidParameterValue",
                        "Message": "One or more parameters are invalid. Reason: test refusal.",
                    }
                },
                "SendMessageBatch",
            )
        failed = [
            {
                "Id": e["Id"],
                "SenderFault": False,
                "Code": "InvalidMessageContents",
                "Message": "Invalid characters found (test refusal)",
            }
            for e in bad
        ]
        good = [e for e in Entries if e not in bad]
        if self.calls == 1 and len(good) > 1:
            failed.append(
                {"Id": good[-1]["Id"], "SenderFault": False, "Code": "InternalError", "Message": ""}
            )
            good = good[:-1]
        self.accepted += [e["MessageBody"] for e in good]
        return {"Successful": [{"Id": e["Id"]} for e in good], "Failed": failed}


@pytest.mark.parametrize("whole_call", [False, True], ids=["in-failed", "whole-call"])
def test_every_request_of_a_refused_message_is_listed_and_recorded_with_the_reason(
    world, monkeypatch, whole_call
):
    """Stubbed SQS (moto and the emulators refuse only some content, and not in both
    ways): a refused message of 3 requests -> all 3 listed and in state error with SQS's
    reason; the other messages accepted exactly once (an entry failed on SQS's side is
    sent again, the accepted ones are not)."""
    from igata_jobs import submit as module

    keys = world.objects(8)
    world.s3.put_object(Bucket=BUCKET, Key="photos/img-0003-refuse-me.jpg", Body=b"x")
    world.tables()
    stub = _RefusingSqs(whole_call)
    monkeypatch.setattr(module, "_queue", lambda settings: (stub, False, 256 * 1024))
    args = ["--queue", "https://sqs.us-east-1.amazonaws.com/123456789012/stubbed"]
    args += ["--requests-table", REQUESTS, "--per-message", "3", "--collection-id", "c"]
    result = invoke(submit, f"s3://{BUCKET}/photos/", *args)
    assert result.exit_code == 1, result.output
    # Sorted keys: img-0000..img-0003, img-0003-refuse-me, ... -> messages of 3: the second
    # holds img-0003, img-0003-refuse-me and img-0004.
    refused_keys = ["photos/img-0003.jpg", "photos/img-0003-refuse-me.jpg", "photos/img-0004.jpg"]
    reason = "test refusal"
    listed = [x for x in result.output.splitlines() if x.startswith("submit: refused by SQS")]
    assert len(listed) == 3, result.output
    for key, line in zip(sorted(refused_keys), sorted(listed), strict=True):
        assert f"s3://{BUCKET}/{key} (request {request_id('c', BUCKET, key, None)})" in line
        assert reason in line
    assert "sent 6 requests in 2 messages" in result.output
    assert "3 requests refused by SQS, not sent" in result.output
    accepted = [r["s3_uri"] for body in stub.accepted for r in json.loads(body)]
    expected = [f"s3://{BUCKET}/{k}" for k in keys if k not in refused_keys]
    assert sorted(accepted) == sorted(expected)
    errors = _error_items(world)
    assert set(errors) == {request_id("c", BUCKET, k, None) for k in refused_keys}
    for item in errors.values():
        (error,) = json.loads(item["errors"])
        assert reason in error["message"], error
    assert len(world.items()) == 9
