"""Progress on stderr: the INFO lines (progress, summaries) of the toolkit's loggers, as bare messages. Every entry
point (`paircap`, `train_accelerate.py`, a recipe's `run.py`) sets this up once."""

import logging
import sys
from collections.abc import Iterable

LOGGED_PACKAGES = ("paircap", "datasets_scripts")


class ProgressHandler(logging.StreamHandler):
    """Bare log messages on `sys.stderr` as it is when a record comes (a redirected stderr too, as under pytest)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # no fixed stream: `stream` reads sys.stderr each time
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr


def log_progress_to_stderr(packages: Iterable[str] = LOGGED_PACKAGES) -> None:
    """Show the INFO lines of the loggers of `packages` on stderr (once, however often this is called)."""
    for name in packages:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(isinstance(handler, ProgressHandler) for handler in logger.handlers):
            logger.addHandler(ProgressHandler())
