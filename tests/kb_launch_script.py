"""Run `paircap` commands one after another in each process of an `accelerate launch`, recording what they touch
(used by tests/kb/test_kb_launch.py).

Usage: kb_launch_script.py COMMANDS_JSON WATCHED_DIR LM_MODEL_TYPE RESULTS_DIR. COMMANDS_JSON holds a list of
`paircap` argument lists, run in order through `paircap.cli.main` (as `accelerate launch -m paircap.cli` would run
each). Each process writes RESULTS_DIR/process-{RANK}.json: per command, every model built
(`PreTrainedModel.__init__`: class and `model_type`), every `soundfile.info` probe and every file opened (Python's
`open` audit event: builtins, `io` and `os.open`) under WATCHED_DIR, the command's exit status and its seconds.
Building a language model (a `GenerationMixin` or a model of type LM_MODEL_TYPE) raises at once.
"""

import json
import os
import sys
import time
from pathlib import Path

import soundfile
from transformers import GenerationMixin, PreTrainedModel

from paircap.cli import main


def watch(watched: Path, lm_model_type: str, log: list[dict]) -> None:
    """Record into `log[-1]` (the command running) the models built and the files under `watched` probed or opened."""

    prefix = f"{watched}{os.sep}"

    def inside(path) -> str | None:
        if isinstance(path, bytes | os.PathLike):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None  # a descriptor: its path was recorded when it was opened
        path = os.path.abspath(path)
        return path.removeprefix(prefix) if path.startswith(prefix) else None

    def audit(event: str, args: tuple) -> None:
        if event == "open" and log and (name := inside(args[0])) is not None:
            log[-1]["opened"].append([name, args[1]])  # mode: None for os.open, "r", "rb", ... for open()

    real_info, real_init = soundfile.info, PreTrainedModel.__init__

    def info(file, *args, **kwargs):
        if (name := inside(file)) is not None:
            log[-1]["probed"].append(name)
        return real_info(file, *args, **kwargs)

    def init(self, config, *args, **kwargs):
        model_type = getattr(config, "model_type", None)
        log[-1]["models"].append([type(self).__name__, model_type])
        if isinstance(self, GenerationMixin) or model_type == lm_model_type:
            raise AssertionError(f"{type(self).__name__} ({model_type}) was built: a KB tool built the language model")
        real_init(self, config, *args, **kwargs)

    sys.addaudithook(audit)
    soundfile.info = info
    PreTrainedModel.__init__ = init


def run(commands_file: str, watched_dir: str, lm_model_type: str, results_dir: str) -> int:
    log: list[dict] = []
    watch(Path(os.path.abspath(watched_dir)), lm_model_type, log)
    results = Path(results_dir, f"process-{os.environ['RANK']}.json")
    try:
        for argv in json.loads(Path(commands_file).read_text()):
            log.append({"command": argv[:2], "models": [], "probed": [], "opened": [], "status": None})
            start = time.perf_counter()
            log[-1]["status"] = main(argv)
            log[-1]["seconds"] = round(time.perf_counter() - start, 2)
            if log[-1]["status"]:
                return log[-1]["status"]
        return 0
    finally:
        results.write_text(json.dumps(log))


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:]))
