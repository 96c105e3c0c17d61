"""Root conftest: every test directory of the repository (core and plugins) uses the kit."""

pytest_plugins = ["igata_core.testing"]
