"""``python -m descentlab ...``: the same command as ``descentlab ...``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
