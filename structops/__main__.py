"""``python -m structops``: the command line (see :mod:`structops.cli`)."""

from .cli import main

raise SystemExit(main())
