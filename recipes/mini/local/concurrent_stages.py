"""Run a recipe's stages as subprocesses, several at a time, each once the stages whose outputs it reads have finished.

On 2 CPU cores the mini recipe's stages run 1.0-1.6 times faster with a second intra-op thread, so two independent
stages with one thread each (the CLAP and the LM stand-ins; stage 2's curriculum and RAFT-only) finish sooner than
one after the other with two threads each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm


class StageFailed(RuntimeError):
    """A stage's subprocess exited non-zero; the message names the stage, its exit status and its log."""


def run_concurrent_stages(
    stages: Sequence[str],
    inputs: Mapping[str, Sequence[str]],
    command: Callable[[str], list[str]],
    log_dir: Path,
    jobs: int,
    on_success: Callable[[str, float, float], None] | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> None:
    """Run `command(stage)` for every stage, at most `jobs` at a time, in the order given among the ready ones; as each
    stage exits with status 0, before any stage that reads it starts, `on_success(stage, started, exited)` gets its
    process's span (`time.time()`).

    A stage is ready when none of its `inputs` is still to run (inputs outside `stages` count as finished); every stage
    needs an entry in `inputs`, so a stage left out cannot start before what it reads. Each
    subprocess gets `threads` threads (default `cpu_count // jobs`; `OMP_NUM_THREADS`), waiting passively unless the
    environment names an `OMP_WAIT_POLICY`, and appends its output to `log_dir/<stage>.log`.
    When a stage fails, the stages that do not depend on it still run; then `StageFailed` names every failed one.
    """
    missing = [stage for stage in stages if stage not in inputs]
    if missing:
        raise ValueError(f"no inputs listed for the stages {missing}")
    log_dir.mkdir(parents=True, exist_ok=True)
    count = str(threads or max(1, (os.cpu_count() or 1) // jobs))
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count}
    env["TOKENIZERS_PARALLELISM"] = "false"
    waiting = list(stages)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: dict[str, str] = {}
    blocked: set[str] = set()
    bar = tqdm(total=len(waiting), desc="stages", unit="stage", disable=not progress, file=sys.stderr)
    shown: list[str] = []  # the running stages the bar names

    def unfinished(stage: str) -> bool:
        return stage in waiting or stage in running or stage in failed or stage in blocked

    try:
        while waiting or running:
            for stage in list(waiting):
                if any(name in failed or name in blocked for name in inputs[stage]):
                    waiting.remove(stage)
                    blocked.add(stage)
                    bar.write(f"{stage}: not run, an input stage failed", file=sys.stderr)
                elif len(running) < jobs and not any(unfinished(name) for name in inputs[stage]):
                    waiting.remove(stage)
                    log = (log_dir / f"{stage}.log").open("a")
                    process = subprocess.Popen(command(stage), stdout=log, stderr=subprocess.STDOUT, env=env)
                    log.close()
                    running[stage] = (process, time.time())
                    bar.write(f"{stage}: started (log: {log_dir / f'{stage}.log'})", file=sys.stderr)
            if shown != list(running):  # redrawn only on a change: a log file gets one line each
                shown = list(running)
                bar.set_postfix_str(", ".join(shown))
            time.sleep(0.2)
            for stage, (process, start) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[stage]
                bar.update()
                exited = time.time()
                seconds = exited - start
                if process.returncode:
                    failed[stage] = f"exit status {process.returncode}"
                    bar.write(f"{stage}: FAILED after {seconds:.0f} s ({failed[stage]})", file=sys.stderr)
                else:
                    bar.write(f"{stage}: {seconds:.0f} s", file=sys.stderr)
                    if on_success is not None:
                        on_success(stage, start, exited)
    finally:
        for process, _ in running.values():  # interrupted: the stages resume from their checkpoints on a rerun
            process.terminate()
            process.wait()
        bar.close()
    if failed or blocked:
        logs = {stage: log_dir / f"{stage}.log" for stage in failed}
        lines = [
            f"{stage} failed ({why}); the end of {logs[stage]}:\n{log_tail(logs[stage])}"
            for stage, why in failed.items()
        ]
        lines += [f"{stage} did not run: a stage it reads failed" for stage in sorted(blocked)]
        raise StageFailed("\n".join(lines))


def log_tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
