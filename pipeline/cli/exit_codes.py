"""The exit codes of `python -m pipeline …` (CONTRACTS: 0, 1, 2; 130 added for Ctrl-C)."""

EXIT_OK = 0             # success
EXIT_FAILURE = 1        # runtime failure (one line on stderr: what failed and how to fix it)
EXIT_USAGE = 2          # bad usage or an invalid parameter (the message names the flag)
EXIT_INTERRUPTED = 130  # interrupted with Ctrl-C (128 + SIGINT, as shells report it); the run record stays usable
