"""`python -m ibd_lite ...`: see ibd_lite.cli."""

import sys

from .cli import main

sys.exit(main())
