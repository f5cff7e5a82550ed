"""``python -m controller``: the same entry point as the ``stepwise`` command."""

from controller.cli import main

raise SystemExit(main())
