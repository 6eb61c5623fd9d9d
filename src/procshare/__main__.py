"""``python -m procshare``: the command line (see ``procshare --help``)."""

import sys

from ._cli import main

sys.exit(main())
