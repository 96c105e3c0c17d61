"""``python -m igata.cli INPUT...``: the original entry point, same as ``igata run INPUT...``.

Components and options come from the original's environment variables
(``INPUT_CONTEXT_MANAGER``, ``OUTPUT_CONTEXT_MANAGER``, ``PREDICTOR_MODULE``…); every option
of ``igata run`` works too. Logging follows ``LOG_LEVEL`` and ``IGATA_LOG_FORMAT``.
"""

import os
import sys

from igata_core.cli import run
from igata_core.logs import level_from, setup_logging


def main() -> None:
    # The ``run`` command alone, so that ``--help`` prints a usage line that works as printed.
    setup_logging(level_from(0, False), os.environ.get("IGATA_LOG_FORMAT", "text"))
    run.main(args=sys.argv[1:], prog_name="python -m igata.cli", obj={"quiet": False})


if __name__ == "__main__":
    main()
