"""``python -m procpool``: the same as the ``procpool`` command (see _cli.py)."""

import sys

from ._cli import main

sys.exit(main())
