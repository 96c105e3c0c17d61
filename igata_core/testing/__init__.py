"""Testing kit for igata and its plugins: ``pytest_plugins = ["igata_core.testing"]``.

Fixtures:

* ``local_aws`` (session): moto in server mode on a free loopback port; this process's
  environment points every boto3 client at it (``AWS_ENDPOINT_URL``, fake credentials,
  region ``us-east-1``). ``local_aws.env()`` is the environment for a worker subprocess.
  With ``IGATA_TEST_S3_ENDPOINT``, ``IGATA_TEST_S3_ACCESS_KEY`` and
  ``IGATA_TEST_S3_SECRET_KEY`` set, S3 goes to that endpoint with those keys instead (a
  strict S3 such as Ceph's gateway, see docs/s3-conformance.md). Likewise
  ``IGATA_TEST_SQS_ENDPOINT`` (LocalStack's SQS) and ``IGATA_TEST_DYNAMODB_ENDPOINT``
  (dynalite) send SQS and DynamoDB to strict emulators (docs/aws-conformance.md,
  :mod:`igata_core.testing.emulators`); ``local_aws.strict`` names the services that are
  not on moto, and SNS always stays there.
* ``aws`` (function): the same endpoint, emptied before the test (moto's reset API; on an
  external S3, every bucket of its user is deleted).
* ``fault_proxy`` (function): a fault-injecting TCP proxy in front of ``local_aws``
  (modes ``pass``, ``refuse``, ``reset``, ``delay``, ``blackhole``), see
  :mod:`igata_core.testing.proxy`.

Helpers: :func:`run_pipeline` runs a pipeline in-process; :class:`Queues` creates SQS queues
(with dead-letter queues), sends to them, counts and drains them; contract test classes live
in :mod:`igata_core.testing.contracts`; fault injection in :mod:`igata_core.testing.faults`.
"""

from __future__ import annotations

from collections.abc import Iterator

try:
    import pytest
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "igata_core.testing needs the testing extra (pytest, moto, boto3): "
        "pip install 'igata-core[testing]'"
    ) from exc

from igata_core.testing.aws import (
    LocalAws,
    local_aws_environment,
    start_local_aws,
    strict_endpoints_from_env,
)
from igata_core.testing.proxy import fault_proxy
from igata_core.testing.queues import Queues
from igata_core.testing.rgw import ExternalS3Aws, external_s3_from_env
from igata_core.testing.run import RunResult, run_pipeline

__all__ = ["LocalAws", "Queues", "RunResult", "fault_proxy", "run_pipeline"]


@pytest.fixture(scope="session")
def local_aws() -> Iterator[LocalAws]:
    # Checked before moto starts: a half-set or remote IGATA_TEST_S3_* is an error at once.
    external_s3 = external_s3_from_env()
    aws = start_local_aws(strict_endpoints_from_env())
    if external_s3 is not None:
        aws = ExternalS3Aws(aws, external_s3)
    try:
        with local_aws_environment(aws):
            yield aws
    finally:
        aws.stop()


@pytest.fixture
def aws(local_aws: LocalAws) -> Iterator[LocalAws]:
    local_aws.reset()
    with local_aws_environment(local_aws):
        yield local_aws
