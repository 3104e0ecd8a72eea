"""Train PairCap with accelerate (paper §3.2, §4.1): stage 1 projector alignment, stage 2 RAFT with IA3 and curriculum.

    accelerate launch train_accelerate.py --config configs/stage1_alignment.yaml
    accelerate launch train_accelerate.py --config configs/stage2_phase1.yaml
    accelerate launch train_accelerate.py --config configs/stage2_phase2.yaml
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml train_accelerate.py --config ...

Any setting of the YAML file can be overridden on the command line (`--learning_rate 5e-5`, `--resume`, ...).
The progress bar and the log lines (JSON, also appended to `output_dir/log.jsonl`) go to stderr. Expected failures (no
intact checkpoint, a non-finite loss, a bad setting) print one line and exit 2; `--debug` shows the traceback.
"""

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.contrib.logging import logging_redirect_tqdm

from paircap.logs import LOGGED_PACKAGES, log_progress_to_stderr
from paircap.training.config import parse_config
from paircap.training.errors import TrainingError
from paircap.training.loop import train


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        config = parse_config([arg for arg in argv if arg != "--debug"])
    except ValueError as error:  # a bad setting
        return report(error, debug)
    try:
        with progress_log():
            train(config)
    except TrainingError as error:
        return report(error, debug)
    return 0


@contextmanager
def progress_log() -> Iterator[None]:
    """The toolkit's info lines (log records, resume and export notes) on stderr, above the progress bar."""
    log_progress_to_stderr()
    with logging_redirect_tqdm(loggers=[logging.getLogger(name) for name in LOGGED_PACKAGES]):
        yield


def report(error: Exception, debug: bool) -> int:
    """One line on stderr and exit status 2, or the traceback under --debug."""
    if debug:
        raise error
    print(f"error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
