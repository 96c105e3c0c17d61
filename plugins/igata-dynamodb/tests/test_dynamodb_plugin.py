"""The plugin as installed: entry point, names, and a start-up that imports no boto3."""

from __future__ import annotations

import json
import subprocess
import sys

from igata_core.plugins import build_registry


def test_the_entry_point_registers_the_sink_its_alias_and_the_command() -> None:
    registry = build_registry()
    info = registry.plugins["dynamodb"]
    assert info.error is None
    assert info.distribution == "igata-dynamodb"
    assert sorted(info.components) == ["command:dynamodb", "sink:dynamodb"]
    assert (
        registry.get("sink", "DynamodbOutputCtxManager").obj is registry.get("sink", "dynamodb").obj
    )


def test_registering_the_plugin_imports_no_aws_library() -> None:
    code = (
        "import json, sys\n"
        "from igata_core.plugins import build_registry, heavy_modules_loaded\n"
        "registry = build_registry()\n"
        "registry.get('sink', 'dynamodb'); registry.get('command', 'dynamodb')\n"
        "print(json.dumps(heavy_modules_loaded()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "boto3" not in loaded and "botocore" not in loaded


def test_the_client_has_short_explicit_timeouts_and_few_attempts() -> None:
    from igata_dynamodb.sink import DynamoDbSink

    sink = DynamoDbSink(
        {"requests_tablename": "req", "results_tablename": "res", "read_timeout": 4.0,
         "connect_timeout": 1.5, "max_attempts": 2}
    )  # fmt: skip
    config = sink.make_client(max_pool_connections=4).meta.config
    assert (config.read_timeout, config.connect_timeout) == (4.0, 1.5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (
        DynamoDbSink({"requests_tablename": "req", "results_tablename": "res"}).opts["read_timeout"]
        == 10.0
    )
