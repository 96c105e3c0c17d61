"""Root conftest: every test directory of the repository (core and plugins) uses the kit."""

import os

pytest_plugins = ["igata_core.testing"]

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
