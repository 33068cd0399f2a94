"""`python -m mipp ...`: the command-line interface (see mipp.cli)."""

from mipp.cli import main

raise SystemExit(main())
