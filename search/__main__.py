"""`python -m search` is the `fusion-nas` command."""
from __future__ import annotations

import sys

from search.cli import main

sys.exit(main())
