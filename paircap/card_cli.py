"""`paircap card`: rewrite a release's model card (`README.md`) for the repo it will be pushed to, with the results a
`paircap evaluate` run saved, keeping what its card recorded (status, base models, the LM's licence, training pairs).
Its `model-index` is the run of the release's default configuration (`hub_cards.release_default`), never the best one.

    paircap card outputs/stage2-phase2/release --repo-id org/paircap --evaluation eval/clotho
    hf upload org/paircap outputs/stage2-phase2/release .
"""

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

STATUS = re.compile(r"^> \*\*Status:\*\* (.+)$", re.MULTILINE)


def add_card_command(commands, common: argparse.ArgumentParser) -> None:
    """Add `card` to the `paircap` subcommands `commands`; it takes the options of `common`."""
    card = commands.add_parser("card", parents=[common], help="rewrite a release's model card with evaluation results")
    card.add_argument("release", type=folder_with("config.json", "release"), help="release folder")
    card.add_argument("--repo-id", required=True, help="the model repo the release is pushed to, e.g. org/paircap")
    card.add_argument(
        "--evaluation",
        type=folder_with("results.json", "`paircap evaluate` output"),
        default=None,
        help="a `paircap evaluate --output-dir` folder",
    )
    card.add_argument(
        "--default-kb",
        default=None,
        help="the evaluated knowledge base (a --kb of the evaluation, or its folder name) that is the release's own: "
        "the card reports its run (default: the one `paircap evaluate` recorded)",
    )
    card.set_defaults(run=run_card)


def folder_with(name: str, kind: str) -> Callable[[str], Path]:
    """An argparse type: a folder holding the file `name` (else the error says it is not a `kind` folder)."""

    def parse(text: str) -> Path:
        if not Path(text, name).is_file():
            raise argparse.ArgumentTypeError(f"{text}: no {name}; not a {kind} folder")
        return Path(text)

    return parse


def run_card(args: argparse.Namespace) -> int:
    from hub_cards import earlier_provenance, load_evaluation, render_model_card
    from modeling_paircap.configuration_paircap import PairCapConfig

    release, evaluation = args.release, args.evaluation
    if args.default_kb and not evaluation:
        print(
            "paircap card: error: --default-kb names a knowledge base of an evaluation: pass --evaluation",
            file=sys.stderr,
        )
        return 2
    card_path = release / "README.md"
    status = STATUS.search(card_path.read_text(encoding="utf-8")) if card_path.is_file() else None
    earlier = earlier_provenance(release)
    card = render_model_card(
        PairCapConfig.from_pretrained(release),
        repo_id=args.repo_id,
        training_status=status.group(1) if status else None,
        base_models=earlier.get("base_model"),
        language_model_license=earlier.get("language_model_license"),
        training_sources=earlier.get("training_sources"),
        release_dir=release,
        default_knowledge_base=args.default_kb,
        **(load_evaluation(evaluation) if evaluation else {}),
    )
    card.save(card_path)
    results = card.data.eval_results
    index = f"model-index: run `{results[0].metric_config}`" if results else "no model-index (its results say why)"
    print(f"wrote {card_path} for {args.repo_id}" + (f"; {index}" if evaluation else ""))
    return 0
