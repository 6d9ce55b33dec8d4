"""`python -m herald.cli`, as the tests start Herald processes."""

import sys

from herald.cli import main

sys.exit(main())
