"""``python -m pyrovae``: the same as the ``pyrovae`` command."""

import sys

from pyrovae.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
