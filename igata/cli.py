"""``python -m igata.cli INPUT...``: the original entry point, same as ``igata run INPUT...``.

Components and options come from the original's environment variables
(``INPUT_CONTEXT_MANAGER``, ``OUTPUT_CONTEXT_MANAGER``, ``PREDICTOR_MODULE``…).
"""

import sys

from igata_core.cli import cli


def main() -> None:
    cli(["run", *sys.argv[1:]], prog_name="python -m igata.cli")


if __name__ == "__main__":
    main()
