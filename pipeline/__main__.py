"""`python -m pipeline search | doctor | queue` (see pipeline/cli/ and docs/cli.md)."""
import sys

from .cli.main import main

sys.exit(main())
