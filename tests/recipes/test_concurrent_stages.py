"""`run_concurrent_stages`: subprocess stages start only after the stages they read, and one failure loses only its
dependants."""

import os
import sys
from pathlib import Path

import pytest

from recipes.mini.local.concurrent_stages import StageFailed, run_concurrent_stages

INPUTS = {"corpus": (), "clap": ("corpus",), "lm": ("corpus",), "assemble": ("clap", "lm"), "probe": ("clap",)}


def stamping_command(folder: Path, fail: str | None = None):
    """A stage that writes its start and end times (`<stage>.start`, `<stage>.end`), or exits 3 if it is `fail`."""

    def command(stage: str) -> list[str]:
        statements = [
            "import sys, time",
            "from pathlib import Path",
            f"folder = Path({str(folder)!r})",
            f"(folder / '{stage}.start').write_text(repr(time.time()))",
            "time.sleep(0.3)",
            f"print('stage {stage} says hello')",
            *(["print('cannot read the corpus')", "sys.exit(3)"] if stage == fail else []),
            f"(folder / '{stage}.end').write_text(repr(time.time()))",
        ]
        code = "; ".join(statements)
        return [sys.executable, "-c", code]

    return command


def stamp(folder: Path, stage: str, which: str) -> float:
    return float((folder / f"{stage}.{which}").read_text())


def test_every_stage_starts_after_the_stages_it_reads_and_logs_its_output(tmp_path):
    spans = {}
    command, logs = stamping_command(tmp_path), tmp_path / "logs"
    run_concurrent_stages(
        list(INPUTS),
        INPUTS,
        command,
        logs,
        jobs=2,
        on_success=lambda stage, *span: spans.update({stage: span}),
        progress=False,
    )
    for stage, inputs in INPUTS.items():
        assert (tmp_path / f"{stage}.end").is_file()
        assert all(stamp(tmp_path, stage, "start") >= stamp(tmp_path, name, "end") for name in inputs)
        assert f"stage {stage} says hello" in (tmp_path / "logs" / f"{stage}.log").read_text()
        started, exited = spans[stage]  # the process's span holds the stage's own
        assert started <= stamp(tmp_path, stage, "start") <= stamp(tmp_path, stage, "end") <= exited


def test_a_failed_stage_stops_its_dependants_only_and_its_error_quotes_its_log(tmp_path):
    command = stamping_command(tmp_path, fail="lm")
    with pytest.raises(StageFailed) as error:
        run_concurrent_stages(list(INPUTS), INPUTS, command, tmp_path / "logs", jobs=2, progress=False)
    message = str(error.value)
    assert "lm failed (exit status 3)" in message and "cannot read the corpus" in message
    assert str(tmp_path / "logs" / "lm.log") in message
    assert "assemble did not run" in message and not (tmp_path / "assemble.start").exists()
    assert (tmp_path / "clap.end").is_file() and (tmp_path / "probe.end").is_file()  # they do not read lm


def test_stages_outside_the_list_count_as_finished(tmp_path):
    run_concurrent_stages(["assemble"], INPUTS, stamping_command(tmp_path), tmp_path / "logs", jobs=2, progress=False)
    assert (tmp_path / "assemble.end").is_file() and not (tmp_path / "clap.start").exists()


def test_a_stage_without_listed_inputs_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="no inputs listed for the stages"):
        run_concurrent_stages(["corpus", "kb"], INPUTS, stamping_command(tmp_path), tmp_path / "logs", jobs=2)
    assert not (tmp_path / "corpus.start").exists()


def test_stages_ready_together_start_in_the_order_given(tmp_path):
    run_concurrent_stages(["corpus", "lm", "clap"], INPUTS, stamping_command(tmp_path), tmp_path / "logs", jobs=1)
    assert stamp(tmp_path, "lm", "end") <= stamp(tmp_path, "clap", "start")  # both ready once the corpus is done


@pytest.mark.parametrize(("threads", "expected"), [(3, "3"), (None, str(max(1, (os.cpu_count() or 1) // 2)))])
def test_each_stage_gets_its_threads_and_waits_passively(tmp_path, monkeypatch, threads, expected):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    code = "import os; print('threads', os.environ['OMP_NUM_THREADS'], 'policy', os.environ['OMP_WAIT_POLICY'])"
    logs = tmp_path / "logs"
    run_concurrent_stages(
        ["corpus"], INPUTS, lambda stage: [sys.executable, "-c", code], logs, jobs=2, progress=False, threads=threads
    )
    assert f"threads {expected} policy PASSIVE" in (logs / "corpus.log").read_text()
