"""`python -m herald.cli`, as the tests start Herald processes."""

import sys

from herald.cli import main

if __name__ == "__main__":
    sys.exit(main())
