"""The two demos: the main job on a local AWS (``examples.demo``) and the local-files one
(``examples.demo_local``): their checks, fed right and wrong outcomes, and both end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from examples import demo, demo_local
from examples.digits import load_split, write_bad_inputs, write_test_pngs

ROOT = Path(__file__).resolve().parents[1]
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:igata-demo-complete"


def _run(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


# -- the main demo: plan ----------------------------------------------------------------------


def _images(count: int) -> dict[str, int]:
    return {f"digit-{i:05d}-label-{i % 10}.png": i % 10 for i in range(count)}


BAD_KEYS = {"corrupt": "bad/bad-corrupt.png", "truncated": "bad/bad-truncated.png"}


def test_plan_sends_original_format_requests_in_messages_of_ten():
    plan = demo.build_plan(_images(25), BAD_KEYS, TOPIC_ARN)
    assert len(plan.good) == 25
    assert [r.request_id for r in plan.bad] == [
        "req-bad-corrupt", "req-bad-truncated", "req-bad-missing-key", "req-bad-no-image-id",
    ]  # fmt: skip
    *requests, malformed = plan.messages
    assert [len(m.requests) for m in requests] == [10, 10, 9]
    assert malformed.malformed and not malformed.requests
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.body)

    first = json.loads(requests[0].body)
    assert [r["request_id"] for r in first][6:] == [r.request_id for r in plan.bad]
    assert [m.should_fail for m in plan.messages] == [True, False, False, True]

    sent_ids = []
    for number, message in enumerate(requests):
        for request in json.loads(message.body):
            sent_ids.append(request["request_id"])
            assert request["collection_id"] == demo.COLLECTION_ID
            assert request["s3_uri"].startswith(f"s3://{demo.BUCKET}/")
            # every other message names its topic; the rest use the workers' default
            assert request.get("sns_topic_arn") == (TOPIC_ARN if number % 2 == 0 else None)
            if request["request_id"] != "req-bad-no-image-id":
                assert request["image_id"].startswith("images:")
    assert "image_id" not in plan.bad[3].fields
    assert sorted(sent_ids) == sorted(r.request_id for r in plan.requests)
    good = {r.request_id: r for r in plan.good}
    assert good["req-00013"].label == 3
    assert good["req-00013"].fields["s3_uri"] == (
        f"s3://{demo.BUCKET}/digits/digit-00013-label-3.png"
    )


# -- the main demo: its check -----------------------------------------------------------------


@pytest.fixture
def planned():
    plan = demo.build_plan(_images(30), BAD_KEYS, TOPIC_ARN)
    sent = {f"msg-{i}": message for i, message in enumerate(plan.messages)}
    return plan, sent


def _as_expected(plan: demo.Plan, sent: dict[str, demo.Message]) -> demo.Observed:
    requests = {
        r.request_id: {
            "request_id": r.request_id,
            "state": "completed" if r.good else "error",
            "errors": [] if r.good else [{"stage": r.expected_stage, "attempt": 2}],
        }
        for r in plan.requests
    }
    results = [
        {"request_id": r.request_id, "s3_uri": r.fields["s3_uri"], "label": str(r.label)}
        for r in plan.good
    ]
    dead = {mid: m.body for mid, m in sent.items() if m.should_fail}
    notices = [
        {"request_id": r.request_id, "status": "completed" if r.good else "error"}
        for r in plan.requests
    ]
    return demo.Observed([0, 0], requests, results, dead, (0, 0, 0), notices)


def test_demo_check_accepts_the_expected_outcome(planned):
    plan, sent = planned
    check = demo.evaluate(plan, sent, _as_expected(plan, sent))
    assert check.problems == []
    assert (check.completed, check.accuracy) == (30, 1.0)
    assert check.notices_by_status == {"completed": 30, "error": 4}
    assert check.duplicate_notices == 0


def test_demo_check_reports_what_went_wrong(planned):
    plan, sent = planned
    seen = _as_expected(plan, sent)
    seen.exit_codes = [0, 3]
    seen.requests["req-00001"]["state"] = "queued"
    seen.results = [r for r in seen.results if r["request_id"] != "req-00002"]
    seen.results.append({**seen.results[0]})  # a second RESULTS item for req-00000
    for result in seen.results[3:12]:
        result["label"] = "x"
    seen.requests["req-bad-missing-key"]["state"] = "completed"
    seen.requests["req-bad-corrupt"]["errors"] = [{"stage": "load"}]
    seen.dead_letters.pop("msg-0")
    seen.queue_counts = (1, 0, 2)
    seen.notices = [n for n in seen.notices if n["request_id"] != "req-00005"]
    seen.notices += [seen.notices[7], {"request_id": "req-elsewhere", "status": "completed"}]

    check = demo.evaluate(plan, sent, seen)
    text = "\n".join(check.problems)
    assert "worker exit codes [0, 3]" in text
    assert "not completed, e.g. ['req-00001 (queued)']" in text
    assert "2 completed request(s) without exactly one RESULTS item" in text
    assert "req-00000 (2 items)" in text and "req-00002 (0 items)" in text
    assert f"accuracy {check.accuracy:.3f} is below 0.85" in text
    assert check.correct == 27 - 9
    assert "req-bad-missing-key (s3_uri names a key that does not exist) should be 'error'" in text
    assert "req-bad-corrupt (random bytes named .png) should be 'error' at stage 'decode'" in text
    assert "error stages ['load']" in text
    assert "dead-letter queue holds ['msg-4'], expected exactly the failing messages" in text
    assert "1 visible, 0 in flight, 2 delayed" in text
    assert "1 request(s) without their SNS notice, e.g. ['req-00005']" in text
    assert "SNS notices for unknown requests: ['req-elsewhere']" in text
    assert check.duplicate_notices == 1


def test_demo_check_wants_an_error_notice_for_a_bad_request(planned):
    plan, sent = planned
    seen = _as_expected(plan, sent)
    for notice in seen.notices:
        if notice["request_id"] == "req-bad-truncated":
            notice["status"] = "completed"
    check = demo.evaluate(plan, sent, seen)
    assert check.problems == ["1 request(s) without their SNS notice, e.g. ['req-bad-truncated']"]


def test_dead_letter_reasons_name_the_failed_requests_and_the_parse_error(planned):
    plan, sent = planned
    seen = _as_expected(plan, sent)
    seen.worker_errors = [
        {"identity": "sqs:msg-4", "stage": "parse", "message": "sqs: message msg-4: body is "
         "not JSON (Expecting value at line 1 column 53)"},
    ]  # fmt: skip
    mixed = demo._why_dead("msg-0", sent["msg-0"].body, sent, seen)
    assert "10 requests, 4 failed (req-bad-corrupt, req-bad-truncated" in mixed
    assert "its 6 good requests are completed" in mixed
    malformed = demo._why_dead("msg-4", sent["msg-4"].body, sent, seen)
    assert "malformed body" in malformed and "parse: sqs: message msg-4: body is not" in malformed
    assert "not sent by this demo" in demo._why_dead("other", "hello", sent, seen)


def test_demo_refuses_bad_arguments_before_doing_anything(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--count", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        demo.main(["--workers", "9"])
    (tmp_path / "mine.txt").write_text("keep me")
    assert demo.main(["--keep", str(tmp_path)]) == 2
    assert "not a new or empty directory" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_workers_environment_ignores_the_callers_aws_and_igata_settings(monkeypatch):
    from igata_core.testing.aws import LocalAws

    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("SQS_ENDPOINT", "https://sqs.example.com")
    monkeypatch.setenv("PREDICTOR_MODULE", "elsewhere")
    env = demo.base_env(LocalAws("http://127.0.0.1:1"))
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert not {"AWS_PROFILE", "SQS_ENDPOINT", "PREDICTOR_MODULE"} & set(env)
    assert env["OUTPUT_CTXMGR_REQUESTS_TABLENAME"] == demo.REQUESTS_TABLE
    assert env["PYTHONPATH"] == str(ROOT)


# -- the main demo end to end -----------------------------------------------------------------


def test_demo_runs_the_sqs_to_dynamodb_job_end_to_end(tmp_path):
    keep = tmp_path / "kept"
    done = _run("examples.demo", "--count", "40", "--keep", str(keep))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert out.rstrip().endswith("demo OK")
    assert "workers exited with 0, 0" in out
    assert "REQUESTS states: queued 44 -> completed 40, error 4" in out
    assert "RESULTS items: 40 (one per completed request)" in out
    assert "dead-letter queue igata-demo-requests-dlq: 2 message(s)" in out
    assert "request queue igata-demo-requests: 0 visible, 0 in flight, 0 delayed" in out
    assert "SNS notices on igata-demo-complete: 44 request entries (40 completed, 4 error)" in out
    assert "req-bad-missing-key [s3_uri names a key that does not exist]: error" in out
    assert "no such key 'digits/no-such-image.png'" in out
    assert "lacks required field 'image_id'" in out
    assert "body is not JSON" in out
    accuracy = float(out.split("accuracy: ")[1].split()[0])
    assert accuracy >= demo.MIN_ACCURACY
    assert "requests/s" in out
    assert sorted(p.name for p in keep.glob("worker-*.log")) == ["worker-1.log", "worker-2.log"]
    errors = [
        json.loads(line)
        for path in keep.glob("worker-*-errors.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert {e["stage"] for e in errors} == {"parse", "load", "decode"}


# -- the local-files demo ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def split():
    return load_split()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _outputs(tmp_path: Path, split, labels_given: dict[int, int] | None = None):
    expected = write_test_pngs(tmp_path / "images", 20, split=split)
    bad = write_bad_inputs(tmp_path / "images")
    labels_given = labels_given or {}
    predictions = [
        {"igata_input": str(p), "label": labels_given.get(i, label), "confidence": 0.9}
        for i, (p, label) in enumerate(expected.items())
    ]
    errors = [{"input": str(p), "stage": "decode", "error_type": "RecordError"} for p in bad]
    return expected, bad, predictions, errors


def test_local_demo_check_accepts_the_expected_outputs(tmp_path, split):
    expected, bad, predictions, errors = _outputs(tmp_path, split)
    _write_jsonl(tmp_path / "p.jsonl", predictions)
    _write_jsonl(tmp_path / "e.jsonl", errors)
    check = demo_local.check_outputs(expected, bad, tmp_path / "p.jsonl", tmp_path / "e.jsonl")
    assert check.problems == []
    assert (check.predictions, check.accuracy) == (20, 1.0)


def test_local_demo_check_reports_missing_wrong_and_unexpected_outputs(tmp_path, split):
    wrong = {i: 9 if label != 9 else 8 for i, label in enumerate(split.test_labels[:20])}
    expected, bad, predictions, errors = _outputs(tmp_path, split, wrong)
    _write_jsonl(tmp_path / "p.jsonl", [*predictions[1:], predictions[2]])
    _write_jsonl(tmp_path / "e.jsonl", errors[:1])
    check = demo_local.check_outputs(expected, bad, tmp_path / "p.jsonl", tmp_path / "e.jsonl")
    text = "\n".join(check.problems)
    assert "no prediction for 1 of 20" in text
    assert "two predictions for" in text
    assert "accuracy 0.000 is below 0.85" in text
    assert "expected exactly ['bad-corrupt.png', 'bad-truncated.png']" in text

    check = demo_local.check_outputs(expected, bad, tmp_path / "none.jsonl", tmp_path / "e.jsonl")
    assert "igata wrote no none.jsonl" in check.problems


def test_local_demo_refuses_a_workdir_with_foreign_images(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "holiday.png").write_bytes(b"x")
    with pytest.raises(demo_local.DemoError, match=r"holiday\.png"):
        demo_local.prepare_images_dir(images)
    assert (images / "holiday.png").exists()


def test_local_demo_runs_igata_end_to_end(tmp_path):
    done = _run("examples.demo_local", "--workdir", str(tmp_path), "--count", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo OK" in done.stdout
    assert "igata exited with 1" in done.stdout
    predictions = (tmp_path / "predictions.jsonl").read_text().splitlines()
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert len(predictions) == 40
    assert sorted(Path(e["input"]).name for e in errors) == ["bad-corrupt.png", "bad-truncated.png"]
    assert {e["stage"] for e in errors} == {"decode"}
