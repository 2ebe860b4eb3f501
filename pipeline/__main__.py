"""`python -m pipeline search | doctor | queue` (see pipeline/cli.py and docs/cli.md)."""
import sys

from .cli import main

sys.exit(main())
