"""``python -m keypool``: runs the command line of :mod:`keypool.cli`."""

import sys

from .cli import main

sys.exit(main())
