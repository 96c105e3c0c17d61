"""A strict S3 for conformance tests: Ceph's RADOS Gateway on a one-node cluster on loopback.

moto accepts any credentials and is lenient in places; RGW (Debian package ``radosgw``) is a
production S3 implementation that checks request signatures, bucket names and location
constraints. :func:`start_rgw` starts, under one temporary directory:

* a monitor on ``127.0.0.1`` (messenger v2 only),
* one OSD on ``memstore`` (objects live in the OSD's memory; only logs touch the disk),
* the gateway (beast frontend, ``tcp_nodelay=1``) on a free loopback port,

then creates an S3 user with ``radosgw-admin``. Cluster authentication is off (``auth ... =
none``): the daemons listen on loopback only, and S3 requests are still signed and checked
with the user's keys. :meth:`RgwCluster.stop` stops the gateway before the OSD and the monitor
(the gateway hangs when its cluster goes first) and removes the directory.

The ``aws`` fixture of :mod:`igata_core.testing` sends S3 traffic to an external endpoint
when ``IGATA_TEST_S3_ENDPOINT``, ``IGATA_TEST_S3_ACCESS_KEY`` and ``IGATA_TEST_S3_SECRET_KEY``
are set (:func:`external_s3_from_env`, :class:`ExternalS3Aws`); SQS, SNS and DynamoDB stay on
moto. Between tests :func:`reset_s3` deletes every bucket of the test user.

Command line (starts a cluster, runs a command with it, stops it)::

    python -m igata_core.testing.rgw -- pytest plugins/igata-s3/tests
    python -m igata_core.testing.rgw            # prints the environment, runs until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igata_core.testing.aws import FAKE_AWS_ENV, LocalAws

#: Debian packages that provide the cluster (``apt-get install --no-install-recommends``).
DEBIAN_PACKAGES = ("radosgw", "ceph-mon", "ceph-osd", "ceph-common")
#: The programs :func:`start_rgw` runs, and the Debian package of each.
BINARIES = {
    "monmaptool": "ceph-base",
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "ceph": "ceph-common",
    "radosgw": "radosgw",
    "radosgw-admin": "ceph-common",
}

ENDPOINT_ENV = "IGATA_TEST_S3_ENDPOINT"
ACCESS_KEY_ENV = "IGATA_TEST_S3_ACCESS_KEY"
SECRET_KEY_ENV = "IGATA_TEST_S3_SECRET_KEY"

#: The S3 user :func:`start_rgw` creates.
USER_ID = "igata-test"
DEFAULT_START_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
_POLL_SECONDS = 0.2
_LOG_TAIL_LINES = 25
# Unix socket paths are limited to 107 bytes; longer admin-socket paths fail at start.
_MAX_SOCKET_PATH = 100


class RgwError(RuntimeError):
    """The cluster could not be started or stopped; the message says which step and why."""


class RgwUnavailable(RgwError):
    """The Ceph programs are not installed."""


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class S3Endpoint:
    """An S3 endpoint and the credentials of its user."""

    url: str
    credentials: S3Credentials
    region: str = FAKE_AWS_ENV["AWS_DEFAULT_REGION"]

    def env(self) -> dict[str, str]:
        """Environment that sends a process's S3 clients here (other services unchanged)."""
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            # moto's fake session token must not travel with real keys (AWS refuses a token
            # issued for other keys; RGW without STS ignores it). Empty is none to botocore.
            "AWS_SESSION_TOKEN": "",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def test_env(self) -> dict[str, str]:
        """The variables that point igata's ``aws`` test fixture at this endpoint."""
        return {
            ENDPOINT_ENV: self.url,
            ACCESS_KEY_ENV: self.credentials.access_key,
            SECRET_KEY_ENV: self.credentials.secret_key,
        }

    def client(self, secret_key: str | None = None, **kwargs: Any) -> Any:
        """A boto3 S3 client for this endpoint (path-style); ``secret_key`` overrides the key."""
        return _s3_client(
            self.url,
            S3Credentials(self.credentials.access_key, secret_key or self.credentials.secret_key),
            self.region,
            **kwargs,
        )


_session_lock = threading.Lock()
_shared_session: Any = None
_reset_clients: dict[tuple[str, S3Credentials], Any] = {}


def _s3_client(url: str, credentials: S3Credentials, region: str, **kwargs: Any) -> Any:
    """A new path-style client with explicit timeouts; ``kwargs`` go to ``Session.client``.

    Clients come from one shared session: a fresh session re-reads botocore's service models
    (0.1 s, and more as the test process's heap grows), which made the fixtures' per-test
    clients the slowest part of a test run. Building a client from a session is not
    thread-safe, hence the lock.
    """
    import boto3
    from botocore.config import Config

    global _shared_session
    config = Config(
        s3={"addressing_style": "path"},
        connect_timeout=5,
        read_timeout=30,
        retries={"mode": "standard", "total_max_attempts": 3},
    )
    arguments: dict[str, Any] = {
        "endpoint_url": url,
        "region_name": region,
        "aws_access_key_id": credentials.access_key,
        "aws_secret_access_key": credentials.secret_key,
        "aws_session_token": None,
        "config": config,
    }
    with _session_lock:
        if _shared_session is None:
            _shared_session = boto3.session.Session()
        return _shared_session.client("s3", **{**arguments, **kwargs})


def missing_binaries() -> list[str]:
    """The Ceph programs :func:`start_rgw` needs that are not on ``PATH``."""
    return [name for name in BINARIES if shutil.which(name) is None]


def rgw_installed() -> bool:
    return not missing_binaries()


def install_hint() -> str:
    packages = " ".join(DEBIAN_PACKAGES)
    return f"apt-get install -y --no-install-recommends {packages}  (as root, Debian/Ubuntu)"


# --------------------------------------------------------------------------- the cluster


@dataclass
class _Daemon:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class RgwCluster:
    """A running one-node cluster; ``endpoint`` is its S3 endpoint with the user's keys."""

    endpoint: S3Endpoint
    directory: Path
    keep_directory: bool = False
    _daemons: list[_Daemon] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def credentials(self) -> S3Credentials:
        return self.endpoint.credentials

    @property
    def pids(self) -> dict[str, int]:
        return {d.name: d.process.pid for d in self._daemons}

    def running(self) -> bool:
        return bool(self._daemons) and all(d.process.poll() is None for d in self._daemons)

    def stop(self) -> None:
        """Stop the gateway, then the OSD, then the monitor; remove the directory. Idempotent."""
        problems = _stop_daemons(self._daemons)
        self._daemons = []
        if not self.keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        if problems:
            raise RgwError("rgw: " + "; ".join(problems))

    def __enter__(self) -> RgwCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _stop_daemons(daemons: list[_Daemon]) -> list[str]:
    problems = []
    # Started mon, osd, rgw: stopped in reverse.
    for daemon in reversed(daemons):
        process = daemon.process
        if process.poll() is not None:
            continue
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
            problems.append(
                f"{daemon.name} (pid {process.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s "
                "and was killed"
            )
    return problems


class _Starter:
    """The steps of :func:`start_rgw`, each bounded by one overall deadline."""

    def __init__(self, directory: Path, timeout: float, keep_directory: bool):
        self.directory = directory
        self.timeout = timeout
        self.keep_hint = (
            f"; logs in {directory / 'log'}"
            if keep_directory
            else "; keep_directory=True (command line: --keep) keeps the logs"
        )
        self.deadline = time.monotonic() + timeout
        self.conf = directory / "ceph.conf"
        self.daemons: list[_Daemon] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}

    def remaining(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RgwError(
                f"rgw: the cluster did not start within {self.timeout:g} s ({step}); a slow "
                f"machine may need a longer timeout{self.keep_hint}{self.tail()}"
            )
        return left

    def tail(self) -> str:
        """The end of the log of the daemon started last (the one being waited for)."""
        return f"\n{_log_tail(self.daemons[-1], self.directory)}" if self.daemons else ""

    def run(self, step: str, *command: str) -> str:
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.remaining(step),
                env=self.env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RgwError(
                f"rgw: the cluster did not start within {self.timeout:g} s ({step}: "
                f"{command[0]} still running){self.keep_hint}{self.tail()}"
            ) from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise RgwError(
                f"rgw: {step}: `{' '.join(command)}` exited with {done.returncode}: {output}"
            )
        return done.stdout

    def ceph(self, step: str, *args: str) -> str:
        return self.run(step, "ceph", "-c", str(self.conf), "--connect-timeout", "5", *args)

    def spawn(self, name: str, log: Path, *command: str) -> None:
        stderr = self.directory / "log" / f"{name}.stderr"
        with open(stderr, "wb") as output:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Its own session, so a Ctrl-C reaches the test process only and the daemons
                # are stopped in order; and killed if the starting thread dies without stopping.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.daemons.append(_Daemon(name, process, log))

    def wait_for(self, step: str, ready: Callable[[], bool], daemon: _Daemon) -> None:
        while True:
            if daemon.process.poll() is not None:
                raise RgwError(
                    f"rgw: {step}: {daemon.name} exited with {daemon.process.returncode} "
                    f"while starting.\n{_log_tail(daemon, self.directory)}"
                )
            if ready():
                return
            self.remaining(step)
            time.sleep(_POLL_SECONDS)


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: a test run killed outright must not leave daemons holding memory.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _log_tail(daemon: _Daemon, directory: Path) -> str:
    parts = []
    for path in (daemon.log, directory / "log" / f"{daemon.name}.stderr"):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
        if lines:
            parts.append(f"last lines of {path}:\n" + "\n".join(lines[-_LOG_TAIL_LINES:]))
    return "\n".join(parts) or f"(no log written in {directory / 'log'})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    d = directory
    return f"""\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
ms bind msgr1 = false
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
run dir = {d}/run
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
log to stderr = false
err to stderr = true
mon data = {d}/mon/$id
osd data = {d}/osd/$id
osd objectstore = memstore
memstore device bytes = 2147483648
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# The monitor batches map updates for 1 s by default, and each pool the gateway creates at
# start (and at its first bucket) waits for two of them: the start took 12 s instead of 2.
paxos propose interval = 0.1
mon allow pool size one = true
mon warn on pool no redundancy = false
debug ms = 0

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port} tcp_nodelay=1
rgw data = {d}/rgw
rgw enable usage log = false
rgw enable ops log = false
"""


def start_rgw(
    *,
    directory: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
    keep_directory: bool = False,
) -> RgwCluster:
    """Start a one-node cluster with a gateway and an S3 user; see the module docstring.

    ``directory`` (default: a new temporary directory) must be empty or absent; it is removed
    by :meth:`RgwCluster.stop` unless ``keep_directory``. Raises :class:`RgwUnavailable` when
    the Ceph programs are missing and :class:`RgwError` when a step fails or the whole start
    takes longer than ``timeout`` seconds (the message names the step and quotes its log).

    The daemons are killed when the thread that started them ends (``PR_SET_PDEATHSIG``, so
    a test run killed outright leaves no daemon behind): start the cluster from a thread
    that outlives its use, such as the main thread.
    """
    missing = missing_binaries()
    if missing:
        raise RgwUnavailable(
            f"rgw: {', '.join(missing)} not found on PATH; install Ceph's gateway with: "
            f"{install_hint()}"
        )
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="igata-rgw-"))
    else:
        root = Path(directory).resolve()
        if root.exists() and any(root.iterdir()):
            raise RgwError(f"rgw: {root} is not empty; give an empty or new directory")
        root.mkdir(parents=True, exist_ok=True)
    if len(str(root / "run" / "client.rgw.a.asok")) > _MAX_SOCKET_PATH:
        raise RgwError(
            f"rgw: {root} is too long a path for the daemons' unix sockets (at most about "
            f"{_MAX_SOCKET_PATH - 20} characters); use a shorter directory or TMPDIR"
        )
    starter = _Starter(root, timeout, keep_directory)
    try:
        endpoint = _start(starter)
    except BaseException:
        problems = _stop_daemons(starter.daemons)
        if not keep_directory:
            shutil.rmtree(root, ignore_errors=True)
        if problems:
            print("rgw: " + "; ".join(problems), file=sys.stderr)
        raise
    return RgwCluster(endpoint, root, keep_directory, starter.daemons)


def _start(starter: _Starter) -> S3Endpoint:
    root = starter.directory
    for sub in ("run", "log", "mon", "osd/0", "rgw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    fsid = str(uuid.uuid4())
    mon_port, rgw_port = _free_port(), _free_port()
    while rgw_port == mon_port:
        rgw_port = _free_port()
    starter.conf.write_text(_config(root, fsid, mon_port, rgw_port), encoding="utf-8")
    conf = str(starter.conf)
    log = root / "log"

    monmap = str(root / "monmap")
    address = f"[v2:127.0.0.1:{mon_port}]"
    starter.run("monitor map", "monmaptool", "--create", "--addv", "a", address,
                "--fsid", fsid, monmap)  # fmt: skip
    starter.run("monitor store", "ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "-c", conf)
    starter.spawn("mon.a", log / "mon.a.log", "ceph-mon", "-f", "-i", "a", "-c", conf)
    mon = starter.daemons[-1]

    # `osd new` both waits for the monitor to answer and registers the OSD (idempotent for
    # one uuid, so retrying it after a connection timeout is safe).
    osd_uuid = str(uuid.uuid4())
    osd_id = _retry_until_mon_answers(starter, mon, "osd", "new", osd_uuid).strip()
    if osd_id != "0":
        raise RgwError(f"rgw: the monitor gave the new OSD id {osd_id!r}, expected '0'")
    starter.run("OSD store", "ceph-osd", "--mkfs", "-i", "0", "--osd-uuid", osd_uuid, "-c", conf)
    starter.spawn("osd.0", log / "osd.0.log", "ceph-osd", "-f", "-i", "0", "-c", conf)
    osd = starter.daemons[-1]
    starter.wait_for("waiting for the OSD to be up", lambda: _osd_up(starter), osd)

    starter.spawn("rgw", log / "client.rgw.a.log", "radosgw", "-f", "-n", "client.rgw.a",
                  "-c", conf)  # fmt: skip
    rgw = starter.daemons[-1]
    url = f"http://127.0.0.1:{rgw_port}"
    starter.wait_for("waiting for the gateway to answer HTTP", lambda: _http_ok(url), rgw)

    credentials = S3Credentials(
        access_key="IGATA" + secrets.token_hex(8).upper(), secret_key=secrets.token_urlsafe(30)
    )
    starter.run("creating the S3 user", "radosgw-admin", "-c", conf, "user", "create",
                f"--uid={USER_ID}", "--display-name=igata tests",
                f"--access-key={credentials.access_key}",
                f"--secret-key={credentials.secret_key}")  # fmt: skip
    return S3Endpoint(url, credentials)


def _retry_until_mon_answers(starter: _Starter, mon: _Daemon, *args: str) -> str:
    step = "waiting for the monitor"
    while True:
        if mon.process.poll() is not None:
            raise RgwError(
                f"rgw: {step}: ceph-mon exited with {mon.process.returncode}.\n"
                f"{_log_tail(mon, starter.directory)}"
            )
        try:
            return starter.ceph(step, *args)
        except RgwError as exc:
            if "did not start within" in str(exc):
                raise
            starter.remaining(step)
            time.sleep(_POLL_SECONDS)


def _osd_up(starter: _Starter) -> bool:
    stat = json.loads(starter.ceph("waiting for the OSD to be up", "osd", "stat", "-f", "json"))
    return int(stat.get("num_up_osds", 0)) >= 1


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------- S3 housekeeping


def _require_loopback(url: str, what: str) -> None:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise RgwError(
            f"{what}: {url} is not a loopback endpoint; test fixtures delete every bucket of "
            "the user between tests, so they only talk to a local S3 (127.0.0.1, ::1, "
            "localhost)"
        )


def reset_s3(endpoint: str, keys: S3Credentials | tuple[str, str]) -> None:
    """Delete every bucket of the user ``keys`` on ``endpoint``, with all it holds.

    Object versions, delete markers and unfinished multipart uploads included (a bucket must
    be empty of all three to be deleted). Only loopback endpoints are accepted.
    """
    _require_loopback(endpoint, "reset_s3")
    credentials = keys if isinstance(keys, S3Credentials) else S3Credentials(*keys)
    client = _reset_clients.get((endpoint, credentials))
    if client is None:
        client = _s3_client(endpoint, credentials, FAKE_AWS_ENV["AWS_DEFAULT_REGION"])
        _reset_clients[(endpoint, credentials)] = client
    for bucket in client.list_buckets().get("Buckets", []):
        _empty_and_delete(client, bucket["Name"])


def _empty_and_delete(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            doomed = [
                {"Key": entry["Key"], "VersionId": entry["VersionId"]}
                for entry in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
            ]
            if doomed:
                result = client.delete_objects(
                    Bucket=bucket, Delete={"Objects": doomed, "Quiet": True}
                )
                if result.get("Errors"):
                    first = result["Errors"][0]
                    raise RgwError(
                        f"reset_s3: could not delete {len(result['Errors'])} objects of "
                        f"bucket {bucket!r}, e.g. {first.get('Key')!r}: {first.get('Code')} "
                        f"{first.get('Message')}"
                    )
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return
        raise RgwError(f"reset_s3: could not empty and delete bucket {bucket!r}: {exc}") from exc


# --------------------------------------------------------------------------- test fixtures


def external_s3_from_env(environ: Mapping[str, str] | None = None) -> S3Endpoint | None:
    """The S3 endpoint the tests should use instead of moto's, or None (moto for S3 too).

    Set by ``IGATA_TEST_S3_ENDPOINT`` with ``IGATA_TEST_S3_ACCESS_KEY`` and
    ``IGATA_TEST_S3_SECRET_KEY`` (``python -m igata_core.testing.rgw -- pytest ...`` sets
    all three). The endpoint must be on loopback: the fixtures delete its buckets.
    """
    environ = os.environ if environ is None else environ
    url = environ.get(ENDPOINT_ENV, "").strip()
    if not url:
        return None
    access, secret = environ.get(ACCESS_KEY_ENV, ""), environ.get(SECRET_KEY_ENV, "")
    missing = [name for name, value in ((ACCESS_KEY_ENV, access), (SECRET_KEY_ENV, secret))
               if not value]  # fmt: skip
    if missing:
        raise RgwError(
            f"{ENDPOINT_ENV} is set ({url}) but {' and '.join(missing)} is not: an S3 that "
            "checks signatures needs its user's keys"
        )
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise RgwError(f"{ENDPOINT_ENV}={url!r} is not an http:// or https:// URL")
    _require_loopback(url, ENDPOINT_ENV)
    if int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1") > 1:
        raise RgwError(
            f"{ENDPOINT_ENV} is set and pytest runs several workers (-n): they would share "
            "one S3 user and delete each other's buckets between tests; run without -n"
        )
    return S3Endpoint(url.rstrip("/"), S3Credentials(access, secret))


class ExternalS3Aws(LocalAws):
    """moto for SQS, SNS and DynamoDB; S3 on an external endpoint with its real keys.

    Every process gets the external S3 user's keys: the external S3 checks them, and moto
    accepts any. ``url`` stays moto's; ``s3_url`` is the S3 endpoint.
    """

    def __init__(self, moto: LocalAws, s3: S3Endpoint):
        super().__init__(moto.url, endpoints=moto.endpoints)
        self.moto = moto
        self.s3 = s3

    @property
    def strict(self) -> frozenset[str]:
        return self.moto.strict | {"s3"}

    @property
    def s3_url(self) -> str:
        return self.s3.url

    def env(self) -> dict[str, str]:
        return {**self.moto.env(), **self.s3.env()}

    def reset(self) -> None:
        self.moto.reset()
        reset_s3(self.s3.url, self.s3.credentials)

    def client(self, service: str, *, on_moto: bool = False, **kwargs: object) -> object:
        if service == "s3" and not on_moto:
            return _s3_client(self.s3.url, self.s3.credentials, self.s3.region, **kwargs)
        return self.moto.client(service, on_moto=on_moto, **kwargs)

    def stop(self) -> None:
        self.moto.stop()


def with_external_s3(aws: LocalAws, environ: Mapping[str, str] | None = None) -> LocalAws:
    """``aws`` itself, or an :class:`ExternalS3Aws` around it when the environment asks."""
    endpoint = external_s3_from_env(environ)
    return aws if endpoint is None else ExternalS3Aws(aws, endpoint)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m igata_core.testing.rgw",
        description="Start a one-node Ceph cluster with a RADOS Gateway (S3) on loopback, run "
        "COMMAND with the environment pointing at it, stop the cluster. Without COMMAND, print "
        "the environment and run until interrupted.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT,
        help=f"Seconds the cluster may take to start (default {DEFAULT_START_TIMEOUT:.0f}).",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the cluster's directory (logs) afterwards."
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run, after `--`.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command

    # SIGTERM (nox, CI cancelling a job) stops the cluster in order like Ctrl-C does.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    started = time.monotonic()
    try:
        cluster = start_rgw(timeout=args.timeout, keep_directory=args.keep)
    except RgwError as exc:
        print(exc, file=sys.stderr)
        return 2
    with cluster:
        print(
            f"rgw: S3 at {cluster.url} (user {USER_ID}) ready in "
            f"{time.monotonic() - started:.1f} s; directory {cluster.directory}",
            file=sys.stderr,
            flush=True,
        )
        env = {**cluster.endpoint.env(), **cluster.endpoint.test_env()}
        if not command:
            for key, value in env.items():
                print(f"export {key}={value}")
            print("rgw: running until Ctrl-C", file=sys.stderr, flush=True)
            try:
                while cluster.running():
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            return 0
        child = subprocess.Popen(command, env={**os.environ, **env})
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.terminate()
            try:
                return child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
