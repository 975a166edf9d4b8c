"""`python -m tinydg`: the command line (tinydg/cli.py)."""

import sys

from .cli import main

sys.exit(main())
