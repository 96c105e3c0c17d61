"""The plugin: registered commands, lazy imports, help text on every option."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from igata_jobs.cli import export, status, submit


def test_the_plugin_registers_the_three_commands():
    from igata_core.cli import cli

    result = CliRunner().invoke(cli, ["--help"])
    for name in ("submit", "status", "export"):
        assert f"  {name} " in result.output


def test_importing_the_plugin_imports_no_aws_library():
    code = (
        "import sys, igata_jobs.plugin, igata_jobs.cli\n"
        "heavy = [m for m in ('boto3', 'botocore', 'igata_s3.source', 'igata_sqs.source',"
        " 'igata_dynamodb.sink') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [submit, status, export], ids=lambda c: c.name)
def test_every_option_has_help(command):
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help and len(param.help) > 10, param.name
    assert command.help


def test_queue_and_table_options_read_the_workers_environment():
    envvars = {p.name: p.envvar for c in (submit, status, export) for p in c.params}
    assert envvars["queue_url"] == ["INPUT_CTXMGR_SQS_QUEUE_URL", "INPUT_CTXMANAGER_SQS_QUEUE_URL"]
    assert envvars["requests_table"] == "OUTPUT_CTXMGR_REQUESTS_TABLENAME"
    assert envvars["results_table"] == "OUTPUT_CTXMGR_RESULTS_TABLENAME"
