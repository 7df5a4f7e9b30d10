"""``python -m hogn`` runs the command line."""

import sys

from hogn.cli import main

sys.exit(main())
