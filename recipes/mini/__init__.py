"""The mini recipe: the whole PairCap pipeline trained and evaluated on real ESC-50 audio in minutes on 2 CPU cores
(`run.py`: the stages; `conf/`: scales and training settings; `local/`: what the stages do; `RESULTS.md`).

`paircap mini` is this recipe's command: installed, the package registers it with `register` (the `paircap.commands`
entry point in pyproject.toml), so the toolkit's CLI never imports the recipe by name.
"""

import argparse


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `paircap mini` to the `paircap` subcommands `commands` (each takes the options of `common`); its arguments
    go on to `run.main`, which parses them (`paircap mini -h` included)."""
    mini = commands.add_parser(
        "mini", parents=[common], add_help=False, help="the mini recipe: the whole pipeline trained on ESC-50 (offline)"
    )
    mini.set_defaults(run=run_command, passes_arguments_on=True)


def run_command(args: argparse.Namespace) -> int:
    from recipes.mini.run import main  # torch, datasets and the stages load only when the recipe runs

    return main(args.arguments)
