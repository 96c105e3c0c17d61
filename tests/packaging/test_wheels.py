"""igata as it will be published: wheels built with ``python -m build``, installed into a fresh
virtual environment outside the repository, where ``igata plugins`` lists every plugin and
the migration guide's commands (docs/migrating.md) pass against a local AWS."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {
    "igata-core": REPO,
    "igata-s3": REPO / "plugins" / "igata-s3",
    "igata-sqs": REPO / "plugins" / "igata-sqs",
    "igata-dynamodb": REPO / "plugins" / "igata-dynamodb",
    "igata-jobs": REPO / "plugins" / "igata-jobs",
}

pytestmark = pytest.mark.timeout(600)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each distribution built once, as ``python -m build`` builds it for the index."""
    out = tmp_path_factory.mktemp("dist")
    for source in DISTRIBUTIONS.values():
        _run([sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(out),
              str(source)], timeout=300)  # fmt: skip
    found = {}
    for name in DISTRIBUTIONS:
        stem = name.replace("-", "_")
        (wheel,) = out.glob(f"{stem}-*.whl")
        found[name] = wheel
    return found


@pytest.fixture(scope="module")
def venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment outside the repository with the four wheels (and the
    AWS CLI, the only other client the migration guide uses)."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(root / "env")], timeout=120)
    python = root / "env" / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", *map(str, wheels.values()), "awscli"],
         timeout=400, cwd=root)  # fmt: skip
    return root / "env"


def test_every_distribution_carries_its_license(wheels: dict[str, Path]) -> None:
    for name, wheel in wheels.items():
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), name
            metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        assert "License-Expression: BSD-2-Clause" in metadata, name
        sdist = next(wheel.parent.glob(f"{name.replace('-', '_')}-*.tar.gz"))
        import tarfile

        with tarfile.open(sdist) as archive:
            members = archive.getnames()
        assert any(m.endswith("/LICENSE") for m in members), f"{name}: sdist without LICENSE"
        # Tests either run from the sdist (with their conftest) or are left out.
        tests = [m for m in members if "/tests/" in m]
        if tests:
            assert any(m.endswith("/tests/conftest.py") for m in tests), f"{name}: {tests}"


def test_typed_packages_ship_py_typed(wheels: dict[str, Path]) -> None:
    for name, wheel in wheels.items():
        module = name.replace("-", "_")
        with zipfile.ZipFile(wheel) as archive:
            assert f"{module}/py.typed" in archive.namelist(), name


def test_readme_links_work_on_the_package_index(wheels: dict[str, Path]) -> None:
    """A README becomes the package's page on the index, where relative links lead nowhere."""
    for name, wheel in wheels.items():
        with zipfile.ZipFile(wheel) as archive:
            metadata = archive.read(
                next(n for n in archive.namelist() if n.endswith("METADATA"))
            ).decode()
        links = re.findall(r"\]\(([^)\s]+)\)", metadata)
        relative = [link for link in links if not re.match(r"(https?://|#|mailto:)", link)]
        assert not relative, f"{name}: relative links in its README: {relative}"


def test_igata_plugins_lists_every_plugin(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IGATA_", "PYTHON"))}
    done = _run([str(venv / "bin" / "igata"), "plugins"], cwd=tmp_path, env=env, timeout=60)
    for plugin in ("igata-s3", "igata-sqs", "igata-dynamodb", "igata-jobs"):
        assert plugin in done.stdout, done.stdout
    assert "BROKEN" not in done.stdout


def _guide() -> tuple[str, str]:
    """The walk-through of docs/migrating.md: its Python file and its shell commands."""
    text = (REPO / "docs" / "migrating.md").read_text()
    walk = text[text.index("## Walk-through") :]
    (model,) = re.findall(r"```python\n(.*?)```", walk, re.S)
    commands = "\n".join(re.findall(r"```bash\n(.*?)```", walk, re.S))
    return model, commands


def test_the_migration_guide_commands_pass(venv: Path, aws: Any, tmp_path: Path) -> None:
    from PIL import Image

    model, commands = _guide()
    (tmp_path / "mymodel.py").write_text(model)
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(buffer, "JPEG")
    (tmp_path / "photo.jpg").write_bytes(buffer.getvalue())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IGATA_", "PYTHON", "AWS_"))}
    env.update(aws.env())
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    # As the guide says for a local AWS: the AWS CLI v1 ignores AWS_ENDPOINT_URL for SQS.
    shim = 'aws() { command aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }\n'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shim + commands], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    lines = done.stdout.split()
    # receive-message body, get-item state, query count, scan height: the guide's promises.
    assert '"completed"' in lines, done.stdout
    assert lines[-2:] == ["1", '"30"'], done.stdout
    assert "photo" in done.stdout and "igata_id" in done.stdout
    dynamodb = aws.client("dynamodb")
    dead = aws.client("sqs").get_queue_url(QueueName="igata-migration-requests-dlq")["QueueUrl"]
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0", "nothing dead-lettered"
    item = dynamodb.get_item(
        TableName="igata-migration-requests", Key={"request_id": {"S": "images:1234"}}
    )["Item"]
    assert item["collection_id"]["S"] == "events:1234"
    assert dynamodb.scan(TableName="igata-migration-results")["Count"] == 1
