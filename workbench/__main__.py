"""`python -m workbench` (also what `accelerate launch -m workbench` runs)."""

import sys

from .cli import main

sys.exit(main())
