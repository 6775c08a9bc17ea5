"""Entry point of the packaged app: the ``quorum`` command, tray included."""

import sys

from quorum.cli import main

if __name__ == "__main__":
    sys.exit(main())
