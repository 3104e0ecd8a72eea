"""`python -m datasets_scripts.readers NAME ROOT SPLIT [options]`: `paircap read` (see :mod:`.cli`)."""

import sys

from datasets_scripts.readers.cli import command_line

sys.exit(command_line())
