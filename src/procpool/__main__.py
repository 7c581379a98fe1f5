"""``python -m procpool``: the same as the ``procpool`` command (see _batch/cli.py)."""

import sys

from ._batch.cli import main

sys.exit(main())
