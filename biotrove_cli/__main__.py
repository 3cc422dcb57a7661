"""``python -m biotrove_cli``: the same entry point as the ``biotrove`` console script."""

import sys

from biotrove_cli.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
