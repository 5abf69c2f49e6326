"""``python -m refnorm`` is the ``refnorm`` command."""

import sys

from .cli import main

sys.exit(main())
