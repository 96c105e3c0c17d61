"""The deployment files: they parse, agree with each other and with igata's options, and the
worker's IAM policy allows exactly what a real worker run calls (on the local AWS server)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from igata_core import PredictorBase

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
JSON_FILES = sorted(DEPLOY.rglob("*.json"))
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
WORKER_POLICY = DEPLOY / "iam" / "worker-policy.json"
PERMISSION_POLICIES = sorted((DEPLOY / "iam").glob("*-policy.json"))
# The account and region of the example ARNs.
REGION, ACCOUNT = "ap-northeast-1", "123456789012"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with moto[server]
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s(kind: str) -> dict[str, Any]:
    found = [doc for path in YAML_FILES for doc in _yaml_docs(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} under deploy/, found {len(found)}"
    return found[0]


def _task_container() -> dict[str, Any]:
    task = json.loads((DEPLOY / "ecs" / "task-definition.json").read_text())
    (container,) = task["containerDefinitions"]
    return container


def _deployment_container() -> dict[str, Any]:
    (container,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _ecs_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in _task_container()["environment"]}


def _k8s_env() -> dict[str, str]:
    return {k: str(v) for k, v in _k8s("ConfigMap")["data"].items()}


# -- every file parses --------------------------------------------------------------------


def test_deploy_has_the_expected_files() -> None:
    names = {_rel(p) for p in [*JSON_FILES, *YAML_FILES]}
    for expected in (
        "deploy/ecs/task-definition.json",
        "deploy/iam/worker-policy.json",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/keda-scaledobject.yaml",
    ):
        assert expected in names


@pytest.mark.parametrize("path", JSON_FILES, ids=_rel)
def test_json_file_parses(path: Path) -> None:
    assert isinstance(json.loads(path.read_text()), dict)


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_kubernetes_manifest_parses(path: Path) -> None:
    docs = _yaml_docs(path)
    assert docs
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "igata", (path.name, doc["kind"])


def test_sqs_redrive_settings_are_json_strings() -> None:
    # SQS takes RedrivePolicy and RedriveAllowPolicy as JSON *strings* inside the JSON.
    queue = json.loads((DEPLOY / "sqs" / "requests-queue.json").read_text())
    redrive = json.loads(queue["Attributes"]["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":igata-requests-dlq")
    assert int(redrive["maxReceiveCount"]) >= 3
    dlq = json.loads((DEPLOY / "sqs" / "requests-dlq.json").read_text())
    allow = json.loads(dlq["Attributes"]["RedriveAllowPolicy"])
    assert allow["sourceQueueArns"] == [f"arn:aws:sqs:{REGION}:{ACCOUNT}:igata-requests"]
    # A standard queue's message keeps its first enqueue time in the DLQ: keep it longer.
    assert int(dlq["Attributes"]["MessageRetentionPeriod"]) > int(
        queue["Attributes"]["MessageRetentionPeriod"]
    )


# -- IAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PERMISSION_POLICIES, ids=_rel)
def test_permission_policies_name_actions_and_resources(path: Path) -> None:
    policy = json.loads(path.read_text())
    assert policy["Version"] == "2012-10-17"
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = _as_list(statement["Action"])
        resources = _as_list(statement["Resource"])
        assert all("*" not in action for action in actions), statement
        for resource in resources:
            assert resource != "*" and resource.startswith("arn:aws:"), statement
            # The only wildcard: the object keys under one S3 prefix.
            assert "*" not in resource or re.fullmatch(r"arn:aws:s3:::[^*/]+/[^*]+/\*", resource)


def test_worker_policy_names_the_resources_the_manifests_use() -> None:
    policy = json.loads(WORKER_POLICY.read_text())
    resources = {r for s in policy["Statement"] for r in _as_list(s["Resource"])}
    for env in (_ecs_env(), _k8s_env()):
        queue = env["INPUT_CTXMANAGER_SQS_QUEUE_URL"].rstrip("/").rsplit("/", 1)[1]
        assert f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}" in resources
        for key in ("OUTPUT_CTXMGR_REQUESTS_TABLENAME", "OUTPUT_CTXMGR_RESULTS_TABLENAME"):
            assert f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{env[key]}" in resources
        assert env["REQUESTS_COMPLETE_SNS_TOPIC_ARN"] in resources
        for bucket in env["IGATA_S3_ALLOWED_BUCKETS"].split(","):
            assert any(r.startswith(f"arn:aws:s3:::{bucket}/") for r in resources)


# -- the manifests configure a worker igata can run ------------------------------------


def _known_env_names() -> set[str]:
    from igata_core.assembly import RUN_OPTIONS, env_names_for
    from igata_core.options import all_env_names
    from igata_core.plugins import build_registry

    registry = build_registry()
    names = {env for opt in RUN_OPTIONS for env in opt.env}
    for kind, name in (("source", "sqs"), ("sink", "dynamodb"), ("loader", "s3")):
        registration = registry.find(kind, name)
        assert registration is not None, (
            f"{kind} {name} is not installed (pip install -e plugins/…)"
        )
        for opt in registration.obj.options:
            names.update(all_env_names(opt, env_names_for(kind, registration.name)))
    # Read outside the component options: the CLI, the AWS SDK, the example model.
    names.update(
        {"IGATA_LOG_FORMAT", "IGATA_METRICS_PORT", "LOG_LEVEL", "AWS_REGION", "DIGITS_MODEL_PATH"}
    )
    return names


@pytest.mark.parametrize("where", ["ecs", "kubernetes"])
def test_manifests_set_only_variables_igata_reads_and_all_it_requires(where: str) -> None:
    env = _ecs_env() if where == "ecs" else _k8s_env()
    unknown = set(env) - _known_env_names()
    assert not unknown, f"{where}: variables no igata option reads: {sorted(unknown)}"
    assert "INPUT_CTXMANAGER_SQS_QUEUE_URL" in env
    assert {"OUTPUT_CTXMGR_REQUESTS_TABLENAME", "OUTPUT_CTXMGR_RESULTS_TABLENAME"} <= set(env)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _one(keyword: str) -> str:
    (value,) = [rest for kw, rest in _final_stage() if kw == keyword]
    return value


def test_dockerfile_runs_igata_as_a_non_root_user_on_python_slim() -> None:
    args = dict(rest.split("=", 1) for kw, rest in _dockerfile() if kw == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert all(rest.startswith("${PYTHON_IMAGE}") for kw, rest in _dockerfile() if kw == "FROM")
    user = _one("USER").split(":")[0]
    assert user not in ("root", "0"), user
    assert json.loads(_one("ENTRYPOINT")) == ["igata", "run"]  # exec form: igata is PID 1
    assert _one("STOPSIGNAL") == "SIGTERM"


def test_image_command_and_manifests_run_the_same_worker() -> None:
    command = json.loads(_one("CMD"))
    assert _task_container()["command"] == command
    assert _deployment_container()["args"] == command
    port = int(command[command.index("--metrics-port") + 1])
    assert f"EXPOSE {port}" in {f"{kw} {rest}" for kw, rest in _final_stage()}
    assert _task_container()["portMappings"][0]["containerPort"] == port
    assert f"127.0.0.1:{port}/healthz" in " ".join(_task_container()["healthCheck"]["command"])
    container = _deployment_container()
    assert container["ports"][0]["containerPort"] == port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_image_command_options_exist_and_its_predictor_imports() -> None:
    from click.testing import CliRunner

    from igata_core.cli import cli

    command = json.loads(_one("CMD"))
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    for flag in (arg for arg in command if arg.startswith("--")):
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_text), f"igata run has no {flag}"
    module, _, name = command[command.index("--predictor") + 1].partition(":")
    found = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.{name}.__mro__)"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert "PredictorBase" in found.stdout


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for the patterns used here: the last match wins, a
    pattern matches a path or any of its parent directories, ``**/`` at any depth."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            tail = pattern[3:]
            candidates = [
                "/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))
            ]
            matched = any(fnmatch.fnmatchcase(c, tail) for c in candidates)
        else:
            matched = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
        if matched:
            ignored = not negate
    return ignored


def test_docker_context_holds_what_the_build_copies_and_nothing_else() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    copied = [
        source
        for keyword, rest in _dockerfile()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not _docker_ignored(source.rstrip("/"), patterns), f"COPY {source}: ignored"
    for kept in (
        "igata_core/cli.py",
        "plugins/igata-sqs/pyproject.toml",
        "examples/digits/model.py",
    ):
        assert not _docker_ignored(kept, patterns), kept
    for dropped in (
        "tests/test_deploy_files.py",
        "plugins/igata-s3/tests/conftest.py",
        "igata_core/__pycache__/cli.cpython-311.pyc",
        "plugins/igata-s3/igata_s3.egg-info/PKG-INFO",
        ".git/config",
        "deploy/iam/worker-policy.json",
    ):
        assert _docker_ignored(dropped, patterns), dropped


# -- sizing rules of docs/deploy.md, checked on the example numbers ------------------------

# Longest SQS long poll: an idle worker may wait this long for its last receive to return.
LONG_POLL = 20


@pytest.mark.parametrize("where", ["ecs", "kubernetes"])
def test_stop_grace_covers_a_drain_with_a_failing_sink(where: str) -> None:
    if where == "ecs":
        env, grace = _ecs_env(), _task_container()["stopTimeout"]
        assert grace <= 120  # the most Fargate allows
    else:
        env = _k8s_env()
        grace = _k8s("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["IGATA_SINK_RETRY_BUDGET"]) + LONG_POLL


def test_keda_target_exceeds_what_one_worker_holds_in_flight() -> None:
    scaled = _k8s("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    metadata = trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values())  # KEDA wants strings
    assert metadata["queueURL"] == _k8s_env()["INPUT_CTXMANAGER_SQS_QUEUE_URL"]
    assert metadata["awsRegion"] == _k8s_env()["AWS_REGION"]
    # One receive batch (10) on top of the prefetch window, else a new replica finds the
    # queue's messages all held by the others.
    assert int(metadata["queueLength"]) >= int(_k8s_env()["IGATA_PREFETCH"]) + 10
    auth = _k8s("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["podIdentity"]["provider"] == "aws"


def test_heartbeat_has_room_in_the_queue_visibility_timeout() -> None:
    queue = json.loads((DEPLOY / "sqs" / "requests-queue.json").read_text())["Attributes"]
    visibility = int(queue["VisibilityTimeout"])
    # The heartbeat renews at half the visibility, checking every min(V/4, 5 s).
    assert visibility >= 20
    assert int(queue["ReceiveMessageWaitTimeSeconds"]) == LONG_POLL


# -- the worker policy against a real worker run ------------------------------------------

# IAM authorises SQS batch calls with the single-message action.
_BATCH_ACTION = {
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "SendMessageBatch": "SendMessage",
}
# Granted for paths a short run does not take (see docs/deploy.md, IAM).
_RARE_PATHS = {
    "dynamodb:GetItem",  # a conditional update refused without returning the old item
    "dynamodb:PutItem",  # items BatchWriteItem keeps returning as unprocessed
    "dynamodb:Query",  # a redelivered request with fewer results than before
}


class _Red(PredictorBase):
    def predict(self, input_record: Any, meta: dict[str, Any]) -> dict[str, Any]:
        return {"result": [{"label": "red", "valid_number": "1"}]}


def _resources(service: str, params: dict[str, Any]) -> Iterator[str]:
    if "QueueUrl" in params:
        name = urlsplit(params["QueueUrl"]).path.rsplit("/", 1)[1]
        yield f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    elif "TopicArn" in params:
        yield f"arn:aws:sns:{REGION}:{ACCOUNT}:{params['TopicArn'].rsplit(':', 1)[1]}"
    elif "TableName" in params:
        yield f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{params['TableName']}"
    elif "RequestItems" in params:
        for table in params["RequestItems"]:
            yield f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
    elif "Bucket" in params:
        key = params.get("Key")
        yield f"arn:aws:s3:::{params['Bucket']}" + (f"/{key}" if key is not None else "")
    else:
        raise AssertionError(f"{service}: no resource for a call with {sorted(params)}")


def _allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action, a) for a in _as_list(statement["Action"]))
        and any(fnmatch.fnmatchcase(resource, r) for r in _as_list(statement["Resource"]))
        for statement in policy["Statement"]
    )


@pytest.fixture
def worker_resources(aws: Any) -> dict[str, str]:
    """The example's queue, bucket, tables and topic, by the names the policy grants."""
    import io

    from PIL import Image

    s3 = aws.client("s3")
    s3.create_bucket(Bucket="igata-inputs")
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(png, "PNG")
    s3.put_object(Bucket="igata-inputs", Key="uploads/red.png", Body=png.getvalue())
    sqs = aws.client("sqs")
    dlq = sqs.create_queue(QueueName="igata-requests-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": "5"}
    queue = sqs.create_queue(
        QueueName="igata-requests",
        Attributes={"VisibilityTimeout": "20", "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    topic = aws.client("sns").create_topic(Name="igata-complete")["TopicArn"]
    created = subprocess.run(
        [sys.executable, "-m", "igata_core", "dynamodb", "create-tables",
         "--requests-table", "igata-requests", "--results-table", "igata-results"],
        env={**os.environ, **aws.env()}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    for request_id, key in (("good-1", "uploads/red.png"), ("missing-1", "uploads/gone.png")):
        request = {"collection_id": "c", "image_id": request_id, "request_id": request_id,
                   "s3_uri": f"s3://igata-inputs/{key}"}  # fmt: skip
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps([request]))
    return {"queue": queue, "topic": topic}


def _record_worker_run(
    monkeypatch: pytest.MonkeyPatch, sink: str, sink_options: dict[str, Any], resources: Any
) -> list[tuple[str, str]]:
    """Run the worker (sqs source -> ``sink``) on the two requests; every AWS call it made,
    as (IAM action, resource ARN)."""
    from botocore.client import BaseClient

    from igata_core.testing import run_pipeline

    calls: list[tuple[str, str, dict[str, Any]]] = []
    original = BaseClient._make_api_call

    def record(client: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append((client.meta.service_model.endpoint_prefix, operation, params))
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", record)
    result = run_pipeline(
        "sqs",
        sink,
        _Red,
        source_options={
            "queue_url": resources["queue"],
            "sns_topic_arn": resources["topic"],
            "max_messages": 2,
            "wait_time_seconds": 1,
        },
        sink_options=sink_options,
        flush_interval=0.1,
    )
    monkeypatch.undo()
    assert result.summary["succeeded"] == 1 and result.summary["failed"] == 1, result.summary
    return [
        (f"{service}:{_BATCH_ACTION.get(operation, operation)}", resource)
        for service, operation, params in calls
        for resource in _resources(service, params)
    ]


def _refused(policy: dict[str, Any], calls: list[tuple[str, str]]) -> list[str]:
    return sorted({f"{a} on {r}" for a, r in calls if not _allowed(policy, a, r)})


def test_worker_policy_allows_every_call_of_a_worker_run_and_no_more(
    worker_resources: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_worker_run(
        monkeypatch,
        "dynamodb",
        {"requests_tablename": "igata-requests", "results_tablename": "igata-results"},
        worker_resources,
    )
    policy = json.loads(WORKER_POLICY.read_text())
    assert not _refused(policy, calls), f"the worker policy refuses: {_refused(policy, calls)}"
    used = {action for action, _ in calls}
    for needed in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "s3:GetObject", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem",
                   "sns:Publish"):  # fmt: skip
        assert needed in used, f"the run never called {needed}: {sorted(used)}"
    granted = {a for s in policy["Statement"] for a in _as_list(s["Action"])}
    assert not granted - used - _RARE_PATHS, f"granted, never used: {granted - used - _RARE_PATHS}"


def test_sqs_sink_policy_adds_what_the_sqs_sink_calls(
    aws: Any, worker_resources: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    output = aws.client("sqs").create_queue(QueueName="igata-results")["QueueUrl"]
    calls = _record_worker_run(monkeypatch, "sqs", {"queue_url": output}, worker_resources)
    policy = json.loads(WORKER_POLICY.read_text())
    extra = json.loads((DEPLOY / "iam" / "worker-policy-sqs-sink.json").read_text())
    assert ("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:igata-results") in calls
    # The sink checks its queue at open (a missing queue is exit 2), then sends.
    assert _refused(policy, calls) == [
        f"sqs:GetQueueAttributes on arn:aws:sqs:{REGION}:{ACCOUNT}:igata-results",
        f"sqs:SendMessage on arn:aws:sqs:{REGION}:{ACCOUNT}:igata-results",
    ]
    combined = {**policy, "Statement": policy["Statement"] + extra["Statement"]}
    assert not _refused(combined, calls)


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
