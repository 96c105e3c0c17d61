"""Root conftest: every test directory of the repository (core and plugins) uses the kit."""

import os
import tempfile

pytest_plugins = ["igata_core.testing"]

# igata's entry-point cache (igata_core/discovery.py) goes to $XDG_CACHE_HOME/igata: keep
# the tests' runs (and the igata processes they start, which inherit it) out of the user's
# own cache. Tests of the cache itself set IGATA_CACHE_DIR.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="igata-tests-cache-")

try:
    from hypothesis import settings
except ImportError:  # the isolated plugin runs do not install hypothesis
    pass
else:
    # CI replays the same examples every run: a property failure found while developing is
    # a bug to fix then, not a coin flip that decides whether a submission lands.
    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
