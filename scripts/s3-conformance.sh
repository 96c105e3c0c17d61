#!/usr/bin/env bash
# S3 conformance: igata-s3's tests and the digits example over S3, against Ceph's RADOS Gateway
# (a production S3 that checks request signatures) instead of moto. See docs/s3-conformance.md.
#
#   scripts/s3-conformance.sh [PYTEST ARGS...]      (nox -s s3-conformance runs this)
#
# Installs the Debian packages if they are missing (as root, or through sudo), then starts a
# one-node cluster on loopback with `python -m igata_core.testing.rgw` and runs pytest inside
# it with IGATA_TEST_S3_ENDPOINT/_ACCESS_KEY/_SECRET_KEY set: the tests' `aws` fixture sends S3
# to the gateway and keeps SQS, SNS and DynamoDB on moto.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)

seconds() { date +%s.%N; }
elapsed() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$1" "$2"; }

started=$(seconds)
if ! "$PYTHON" -c "import sys; from igata_core.testing.rgw import rgw_installed; sys.exit(not rgw_installed())"; then
    if ! command -v apt-get >/dev/null; then
        echo "s3-conformance: Ceph's radosgw is not installed and this is not a Debian-like system;" \
             "install ${PACKAGES[*]} (or their equivalents) and run again" >&2
        exit 2
    fi
    if [ "$(id -u)" = 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        echo "s3-conformance: installing ${PACKAGES[*]} needs root; run as root or install them:" \
             "apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
        exit 2
    fi
    echo "s3-conformance: installing ${PACKAGES[*]} (Debian packages)"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null
fi
installed=$(seconds)

# One test process: the tests share the gateway's one S3 user and empty it between tests.
status=0
"$PYTHON" -m igata_core.testing.rgw -- \
    "$PYTHON" -m pytest -p no:cacheprovider -p no:xdist \
    plugins/igata-s3/tests tests/test_testing_rgw.py "$@" || status=$?
finished=$(seconds)

echo "s3-conformance: install $(elapsed "$started" "$installed") s," \
     "cluster and tests $(elapsed "$installed" "$finished") s, exit status $status"
exit "$status"
