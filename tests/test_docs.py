"""The README and `docs/` say only what runs: every Python snippet runs as written (from the repo root, offline, on the
shipped toy release), every `paircap` command line parses with the CLI's own parser, every training command names a
config that loads, and every repo path they name exists."""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from paircap.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_MAX_LINES = 250


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def command_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped, `&&` chains split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.extend(part.strip() for part in line.split("&&"))
    return commands


def test_the_readme_fits_on_a_screen_or_two():
    assert len((REPO / "README.md").read_text().splitlines()) <= README_MAX_LINES


def subcommand_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the (nested) subcommand `argv` names, and the words after the subcommand's name."""
    parser = build_parser()
    while argv:
        choices = next(
            (action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)), None
        )
        if not choices or argv[0] not in choices:
            break
        parser, argv = choices[argv[0]], argv[1:]
    return parser, argv


def check_paircap_command(page: Path, command: str, argv: list[str]) -> None:
    """`argv` (the words after `paircap`) names an existing (sub)command, and every `--flag` it uses is one of that
    command's (values are not checked: they name the reader's own folders)."""
    parser, rest = subcommand_parser(argv)
    assert parser.prog != "paircap", f"{page.name}: `{command}` names no paircap command"
    if parser.get_default("passes_arguments_on"):
        return  # a command that parses its own arguments (`paircap mini`, `paircap read`)
    known = {option for action in parser._actions for option in action.option_strings}
    unknown = [word.split("=")[0] for word in rest if word.startswith("--") and word.split("=")[0] not in known]
    assert not unknown, f"{page.name}: `{command}` uses flags {unknown} that `{parser.prog}` does not have"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_paircap_command_names_a_command_and_flags_that_exist(page):
    commands = [c for block in blocks(page, "bash") for c in command_lines(block) if c.startswith("paircap ")]
    for command in commands:
        check_paircap_command(page, command, shlex.split(command)[1:])


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_accelerate_launch_parses_and_runs_what_exists(page):
    """Each `accelerate launch ...` line parses with accelerate's own parser, names configs that exist, and runs a repo
    script that exists or `-m paircap.cli` with a paircap command line that the check above accepts."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    commands = [c for block in blocks(page, "bash") for c in command_lines(block) if c.startswith("accelerate launch ")]
    for command in commands:
        try:
            args = parser.parse_args(shlex.split(command)[2:])
        except SystemExit:
            pytest.fail(f"{page.name}: `{command}` does not parse as `accelerate launch`")
        if args.config_file:
            assert (REPO / args.config_file).is_file(), f"{page.name}: `{command}` names a missing config_file"
        if args.module:
            assert args.training_script == "paircap.cli", f"{page.name}: `{command}` runs a module other than ours"
            check_paircap_command(page, command, args.training_script_args)
        else:
            assert (REPO / args.training_script).is_file(), f"{page.name}: `{command}` runs a missing script"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_training_command_names_a_config_that_exists(page):
    commands = [c for block in blocks(page, "bash") for c in command_lines(block) if "train_accelerate.py" in c]
    for command in commands:
        argv = shlex.split(command)
        config = argv[argv.index("--config") + 1]
        assert (REPO / config).is_file(), f"{page.name}: `{command}` names {config}, which is not in the repo"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_linked_repo_path_exists(page):
    for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name} links {target}, which does not exist"


PYTHON_PAGES = [page for page in PAGES if blocks(page, "python")]


@pytest.mark.slow
@pytest.mark.parametrize("page", PYTHON_PAGES, ids=lambda page: page.name)
def test_python_snippets_run_as_written(page, shared_data):
    """A page's snippets run in order in one fresh interpreter from the repo root (later ones use earlier names)."""
    code = "\n".join(blocks(page, "python"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{page.name}:\n{result.stderr[-3000:]}"
