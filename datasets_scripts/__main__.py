"""`python -m datasets_scripts ...`: the same command as `paircap kb ...` (see `datasets_scripts.kb_cli`)."""

import sys

from paircap.cli import main

if __name__ == "__main__":
    sys.exit(main(["kb", *sys.argv[1:]]))
