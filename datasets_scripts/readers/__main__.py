"""`python -m datasets_scripts.readers NAME ROOT SPLIT [--text-only] [--max-duration S] [--save-to DIR]`."""

import sys

from datasets_scripts.readers.cli import main

sys.exit(main())
