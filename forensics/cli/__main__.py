"""``python -m forensics.cli``: the same as the ``forensics`` command."""

import sys

from forensics.cli import main

sys.exit(main())
