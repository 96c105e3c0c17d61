"""``python -m igata_core`` is the ``igata`` command."""

from igata_core.cli import main

main()
