"""`python -m workbench` (also what `accelerate launch -m workbench` runs)."""

import sys

from .cli import main

__all__: list[str] = []  # run, never imported from

sys.exit(main())
