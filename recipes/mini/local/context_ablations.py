"""Stage `context_ablations`: the curriculum's phase 2 (or both phases) trained again with settings changed, each
measured by the context probe (`mechanism.py`), the novel-events evaluation (`novel_events.evaluate_release`) and the
word probe (`novel_words.py`), against the recipe's curriculum model. Every variant trains with the same seed, steps
and data as the recipe's phase(s).

- *Context options*: phase 2 from the recipe's phase-1 release with one or both options of
  `conf/train/stage2_phase2.yaml` set back to the paper's RAFT (audio-to-audio neighbours, the query's audio always
  present): which option teaches the model to read its prompt.
- *Trainable set*: the recipe trains IA3 alone in both phases, the LM's weights and head frozen (the paper's IA3).
  These variants train the LM head too, or the whole LM decoder (the recipe of earlier rounds, on captions that never
  use the novel classes' words), or the whole decoder with the LM's own text objective kept alive
  (`text_replay_pairs`: the `lm` stage's caption text, AudioCaps, Clotho and every ESC-50 training caption, as text
  only): what each costs in reading the prompt and in naming a novel event through a retrieved caption. They change
  phase 1 too, so they train it again from stage 1's release (`<name>/phase1/`)."""

from __future__ import annotations

from typing import NamedTuple

from recipes.mini.local import evaluation
from recipes.mini.local.knowledge_bases import KNOWLEDGE_BASES
from recipes.mini.local.layout import MiniRun
from recipes.mini.local.mechanism import probe_release
from recipes.mini.local.novel_classes import read_novel_classes
from recipes.mini.local.novel_events import evaluate_release
from recipes.mini.local.novel_words import probe_words
from recipes.mini.local.stand_ins import lm_text_template
from recipes.mini.local.training import train_captioner

WITH_HEAD = {"train_lm_head": True}  # IA3 and the LM head (the LM's weights frozen)
WHOLE_LM = {"train_language_model": True, "train_lm_head": True}  # the whole decoder and its head
TEXT_REPLAY_WEIGHT = 1.0  # the replayed text's loss weighs as much as the captions' (not tuned)


class Variant(NamedTuple):
    name: str  # its folder under `context_ablations/`
    label: str  # its rows in RESULTS.md
    settings: dict  # TrainConfig fields over conf/train/stage2_phase2.yaml
    phase1: dict | None = None  # None: from the recipe's phase 1; else phase 1 again, these over stage2_phase1.yaml
    text_replay: bool = False  # every phase it trains replays the `lm` stage's caption text


VARIANTS = (
    Variant("paper_raft", "paper's RAFT (audio-to-audio neighbours, no query dropout)",
            {"neighbor_mode": "audio2audio", "query_dropout": 0.0}),
    Variant("no_query_dropout", "without query dropout", {"query_dropout": 0.0}),
    Variant("audio_neighbours", "audio-to-audio neighbours", {"neighbor_mode": "audio2audio"}),
    Variant("ia3_and_head", "IA3 and the LM head, in phase 1 and 2", WITH_HEAD, WITH_HEAD),
    Variant("whole_lm", "whole LM decoder (earlier rounds' recipe), in phase 1 and 2", WHOLE_LM, WHOLE_LM),
    Variant("text_replay", "whole LM decoder with its caption-text loss replayed, in phase 1 and 2", WHOLE_LM,
            WHOLE_LM, True),
)  # fmt: skip


def selected(run: MiniRun) -> tuple[Variant, ...]:
    """The variants this run trains: `--variants`, else the scale's `context_variants`, else all of them.

    Raises:
        ValueError: a selected name is no variant's.
    """
    chosen = run.variants or run.scale.context_variants or ()
    names = {variant.name for variant in VARIANTS}
    unknown = sorted(set(chosen) - names)
    if unknown:
        raise ValueError(f"context variants: unknown {unknown}; the variants are {', '.join(sorted(names))}")
    return tuple(variant for variant in VARIANTS if not chosen or variant.name in chosen)


def variant_names(run: MiniRun) -> tuple[str, ...]:
    """The names of the variants this run trains: the parts the stage's record lists once each has finished."""
    return tuple(variant.name for variant in selected(run))


def replay_settings(run: MiniRun) -> dict:
    """TrainConfig fields that replay the `lm` stage's caption text, as that stage wrote it."""
    return {
        "text_replay_pairs": [str(run.pairs("text"))],
        "text_replay_weight": TEXT_REPLAY_WEIGHT,
        "text_template": lm_text_template(),
    }


def train_variant(run: MiniRun, variant: Variant) -> None:
    """Its phase 1 when it has one (from stage 1's release), then its phase 2, each skipped once exported."""
    folder = run.path("context_ablations", variant.name)
    replay = replay_settings(run) if variant.text_replay else {}
    start = run.release("stage2_phase1")
    if variant.phase1 is not None:
        start = folder / "phase1" / "release"
        if not (start / "README.md").is_file():  # the card is the last file an export writes
            train_captioner(
                run, "stage2_phase1", run.release("stage1"), run.scale.phase1_steps, 0, output=start.parent,
                **variant.phase1 | replay,
            )  # fmt: skip
    if not (folder / "release" / "README.md").is_file():
        train_captioner(
            run, "stage2_phase2", start, run.scale.phase2_steps, run.scale.max_examples, output=folder,
            **variant.settings | replay,
        )  # fmt: skip


def evaluate_variant(run: MiniRun, name: str) -> None:
    """A variant's captions of the test mixtures, zero-shot and with audio-to-audio and generative pair-to-pair
    retrieval on the refined KB (`evaluation/context_ablations/<name>/`; skipped once written), for CIDEr-D paired
    with the curriculum model's on the same mixtures (`claims.py`)."""
    output = run.path("evaluation", "context_ablations", name)
    if not (output / "results.json").is_file():
        evaluation.evaluate_release(
            run, f"context_ablations/{name}", output, run.pairs("test"), "esc50-mixtures",
            knowledge_bases=[str(run.path("kb", KNOWLEDGE_BASES[0]))], modes=("audio2audio", "generative_pair2pair"),
        )  # fmt: skip


def train_and_probe(run: MiniRun) -> None:
    """Every selected variant: trained (`context_ablations/<name>/`, resumable), then its test-mixture captions
    (`evaluate_variant`), its context probe (`<name>/mechanism/`, with the captioners' controls and right-pair
    conditions), and with novel classes its novel events (`<name>/novel/`) and word probe (`<name>/novel/words/`, of
    its phase-1 release too when it has one)."""
    novel = read_novel_classes(run)
    for variant in selected(run):
        train_variant(run, variant)
        folder = run.path("context_ablations", variant.name)
        evaluate_variant(run, variant.name)
        probe_release(run, folder / "release", folder / "mechanism", (1, run.scale.max_examples))
        if novel:
            evaluate_release(run, folder / "release", folder / "novel")
            probe_words(run, folder / "release", folder / "novel" / "words")
            if variant.phase1 is not None:
                probe_words(run, folder / "phase1" / "release", folder / "novel" / "words" / "phase1")
