"""The mini recipe: the whole PairCap pipeline, trained and evaluated on real ESC-50 audio in minutes on 2 CPU cores.

    paircap mini --output runs/mini            # the full run (RESULTS.md; over 27 min on 2 cores, docs/mini-recipe.md)
    paircap mini --output runs/quick --quick   # every stage for a few steps (smoke test)

(`python -m recipes.mini.run ...` is the same command.)

Stages (`STAGES`), each resumable (a finished stage is skipped on a rerun; an interrupted training resumes from its
last checkpoint, an interrupted embedding from its last shard):

1. `corpus`: ESC-50 clips split by source recording; two-event mixtures with several captions each (AL-mixgen), and
   noisy mixtures whose captions name a wrong class (standing in for WavCaps' weak labels); the caption text of
   AudioCaps and Clotho (no audio) for the language model.
2. `init`: tokenizers trained on that text, and a small random CLAP and Llama.
3. `clap_audio` (with `--teacher`): the CLAP's audio tower pretrained on the AudioSet teacher, as laion's HTSAT was
   on AudioSet; `clap`, `lm`: the stand-ins for `laion/clap-htsat-unfused` and Vicuna (`clap_contrastive`, `lm_text`
   stages); `probe`: what the CLAP's audio embedding can name.
4. `assemble`: the PairCap release from the two.
5. `kb`: knowledge bases *base* (training pairs), *large* (base + noisy pairs) and *refined* (large refined with the
   training pairs, paper §3.5), in the frozen CLAP space.
6. `stage1`, `stage2_phase1`, `stage2_phase2`, `raft_only`: the paper's training recipe (§3.2, §4.1).
7. `evaluate`, `evaluate_raft_only`, `evaluate_stage1`: what `paircap evaluate` scores on the test mixtures (method x
   KB grid, W sweep, top-k sweep), plus event accuracy; `fit` and `zero_shot`: every captioner zero-shot on its own
   training data, and on a larger sample of test mixtures.
8. `novel`: the novel classes no captioner trained on (`novel_classes` of the scale), named through the KBs alone.
   `novel_words`: where their words vanish: the assembled release and every captioner, zero-shot and with a
   same-class example, on the held-out clips of novel and known classes.
9. `mechanism`: does each captioner read its prompt? The context probe on the held-out test clips: zero-shot, its own
   clip with a phrase of its class or of another class, and training clips of other classes as examples.
10. `context_ablations`: phase 2 (or both phases) again with settings changed: its context options set back to the
    paper's RAFT, or IA3 with the LM head, or the whole LM decoder (with or without its text loss replayed); each with
    its test-mixture captions, context probe, novel events and word probe (`--variants` trains only some; a rerun
    trains those missing).
11. `rescoring`: CLAP rescoring of the curriculum model's captions (SLAM-AAC's CLAP-Refine) against none, on the
    `evaluate` stage's test mixtures; `progressive`: phase 2 again from the same phase-1 model with MQ-Cap's
    progressive schedule of retrieved pairs, evaluated as the curriculum model is.
12. `report`: RESULTS.md.

`conf/scales/<scale>.yaml` says how much of everything each scale runs, `conf/train/<stage>.yaml` how each training
stage trains; `local/` does the work. With `--jobs 2` (the default on 2 or more cores) stages that do not read each
other's outputs run side by side, as subprocesses with their logs in `<output>/logs/`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import NamedTuple

from transformers.utils import logging

from paircap.logs import LOGGED_PACKAGES, log_progress_to_stderr
from paircap.threads import apply_threads
from recipes.mini.local import (
    audio_pretraining,
    context_ablations,
    corpus,
    evaluation,
    knowledge_bases,
    mechanism,
    novel_events,
    novel_words,
    probe,
    progressive,
    report,
    rescoring,
    stand_ins,
    training,
)
from recipes.mini.local.concurrent_stages import StageFailed, run_concurrent_stages
from recipes.mini.local.layout import CAPTIONERS, CLIP_FOLDERS, MiniRun
from recipes.mini.local.release import RELEASE_MODE, pack_release
from recipes.mini.local.relocation import relocate_pair_sets
from recipes.mini.local.scales import MiniScale, load_scale, scale_names

logger = logging.get_logger(__spec__.name)  # recipes.mini.run, under `python -m` too

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class Stage(NamedTuple):
    function: Callable[[MiniRun], None]  # what the stage does (in local/)
    inputs: tuple[str, ...]  # the stages whose outputs it reads
    # the parts a run of it does (its record lists those done): a rerun runs it again while one is missing
    parts: Callable[[MiniRun], tuple[str, ...]] | None = None


# With --jobs > 1, stages that are ready together start in this order: those on the longest chain first (the CLAP and
# LM, then stage 1 and stage 2), the probe and the KBs, which only the evaluations read, after them.
STAGES = {
    "corpus": Stage(corpus.write_corpus, ()),
    "init": Stage(stand_ins.init_models, ("corpus",)),
    "clap_audio": Stage(audio_pretraining.pretrain_audio_tower, ("init",)),
    "clap": Stage(stand_ins.train_clap, ("init", "clap_audio")),
    "lm": Stage(stand_ins.train_lm, ("init",)),
    "assemble": Stage(stand_ins.assemble, ("clap", "lm")),
    "stage1": Stage(training.stage1, ("assemble",)),
    "probe": Stage(probe.probe_audio, ("clap",)),
    "kb": Stage(knowledge_bases.build_knowledge_bases, ("assemble",)),
    "stage2_phase1": Stage(training.stage2_phase1, ("stage1",)),
    "stage2_phase2": Stage(training.stage2_phase2, ("stage2_phase1",)),
    "raft_only": Stage(training.raft_only, ("stage1",)),
    "evaluate": Stage(evaluation.evaluate_curriculum, ("kb", "stage2_phase2")),
    "evaluate_raft_only": Stage(evaluation.evaluate_raft_only, ("kb", "raft_only")),
    "evaluate_stage1": Stage(evaluation.evaluate_stage1, ("kb", "stage1")),
    "fit": Stage(evaluation.training_fit, CAPTIONERS),
    "zero_shot": Stage(evaluation.zero_shot_test, CAPTIONERS),
    "novel": Stage(novel_events.novel_events, ("kb", "stage2_phase2", "corpus")),
    "novel_words": Stage(novel_words.probe_releases, ("assemble", *CAPTIONERS, "corpus")),
    "mechanism": Stage(mechanism.probe_captioners, (*CAPTIONERS, "corpus")),
    "context_ablations": Stage(
        context_ablations.train_and_probe, ("stage1", "stage2_phase1", "kb", "corpus"), context_ablations.variant_names
    ),
    "rescoring": Stage(rescoring.evaluate_rescoring, ("kb", "stage2_phase2", "evaluate")),
    "progressive": Stage(progressive.train_and_evaluate, ("stage2_phase1", "stage2_phase2", "kb")),
}
STAGES["report"] = Stage(report.write_results, tuple(STAGES))
# only at scales with `ablations: true`
ABLATIONS = (
    "raft_only", "evaluate_raft_only", "evaluate_stage1", "context_ablations", "rescoring", "progressive"
)  # fmt: skip
NOVEL = ("novel", "novel_words")  # only at scales with novel classes


def stage_names(scale: MiniScale) -> tuple[str, ...]:
    """The stages a run at `scale` has, in order (`novel` and `novel_words` only with novel classes)."""
    names = (name for name in STAGES if scale.ablations or name not in ABLATIONS)
    return tuple(name for name in names if scale.novel_classes or name not in NOVEL)


def run_stages(run: MiniRun, only: list[str] | None = None, jobs: int = 1, threads: int | None = None) -> None:
    """Run the stages not finished yet (of `only`, if given): in this process one after another, or with `jobs` > 1 as
    subprocesses, up to `jobs` at a time, each once the stages it reads have finished (with `threads` CPU threads
    each, default: cpu_count // jobs)."""
    run.path("stages").mkdir(parents=True, exist_ok=True)
    warn_of_changed_settings(run)
    run.write_settings(location=relocate_pair_sets(run))  # a moved or copied run's pair sets point here first
    todo = []
    for index, name in enumerate(run.stages, start=1):
        if only and name not in only:
            continue
        if finished(run, name) and name != "report":
            logger.info(f"[{index}/{len(run.stages)}] {name}: done earlier, skipped")
            continue
        todo.append(name)
    if jobs > 1 and len(todo) > 1:
        if load_scale(run.scale.name) != run.scale:
            raise ValueError(f"--jobs > 1 runs stages with `--scale {run.scale.name}`: {run.scale} is not that scale")
        inputs = {name: STAGES[name].inputs for name in run.stages}
        on_success = partial(record_process_span, run)
        command = partial(stage_command, run)
        run_concurrent_stages(todo, inputs, command, run.path("logs"), jobs, on_success=on_success, threads=threads)
        return
    for name in todo:
        index = run.stages.index(name) + 1
        logger.info(f"[{index}/{len(run.stages)}] {name}")
        started, start = time.time(), time.perf_counter()
        STAGES[name].function(run)
        seconds = time.perf_counter() - start
        record = {"stage": name, "seconds": seconds, "started": started, "finished": time.time()}
        if STAGES[name].parts is not None:
            record["parts"] = sorted(set(recorded_parts(run, name)) | set(STAGES[name].parts(run)))
        run.stage_record(name).write_text(json.dumps(record))
        logger.info(f"[{index}/{len(run.stages)}] {name}: {seconds:.0f} s")


def recorded_parts(run: MiniRun, name: str) -> list[str]:
    """The parts stage `name`'s record lists as done (none without a record)."""
    path = run.stage_record(name)
    return json.loads(path.read_text()).get("parts", []) if path.is_file() else []


def finished(run: MiniRun, name: str) -> bool:
    """Whether stage `name` has a record listing every part this run asks of it (a stage without parts: a record)."""
    parts = STAGES[name].parts
    if not run.stage_record(name).is_file():
        return False
    return parts is None or set(parts(run)) <= set(recorded_parts(run, name))


def warn_of_changed_settings(run: MiniRun) -> None:
    """Log a warning naming each scale setting that differs from what the run's `settings.json` recorded (its finished
    stages used the recorded values; the stages still to run will use the new ones)."""
    path = run.path("settings.json")
    recorded = json.loads(path.read_text()).get("scale", {}) if path.is_file() else {}
    current = json.loads(json.dumps(asdict(run.scale)))  # tuples as JSON lists, as recorded
    changed = [f"{key}: {recorded[key]!r} -> {new!r}" for key, new in current.items() if recorded.get(key, new) != new]
    if changed:
        logger.warning(
            f"{path}: the scale changed since this run started ({'; '.join(changed)}); its finished stages used the "
            "recorded values, the stages still to run use the new ones"
        )


def record_process_span(run: MiniRun, name: str, started: float, finished: float) -> None:
    """A stage's record gets the span of the process that ran it, imports and start-up included (the report's wall
    time is the union of these spans)."""
    record = json.loads(run.stage_record(name).read_text())
    run.stage_record(name).write_text(json.dumps(record | {"started": started, "finished": finished}))


def stage_command(run: MiniRun, name: str) -> list[str]:
    """The command that runs one stage of `run` in its own process."""
    return [
        sys.executable, "-m", "recipes.mini.run", "--output", str(run.output), "--data", str(run.data),
        "--scale", run.scale.name, "--clips", *run.clip_folders, "--seed", str(run.seed), "--stages", name,
        "--jobs", "1", *(["--teacher", str(run.teacher)] if run.teacher else []),
        *(["--variants", *run.variants] if run.variants else []),
    ]  # fmt: skip


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="paircap mini", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output", required=True, help="the run's folder (rerun with the same folder to resume)")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the shared data folder (esc50_*, captions)")
    parser.add_argument("--scale", choices=scale_names(), default="full", help="a scale of conf/scales/")
    parser.add_argument("--quick", action="store_true", help="--scale quick: every stage for a few steps (smoke test)")
    parser.add_argument("--pack-release", default=None, help="then write the curriculum model with its refined KB here")
    parser.add_argument(
        "--release-mode",
        choices=evaluation.MODES,
        default=RELEASE_MODE,
        help="the packed release's default retrieval (default: %(default)s, the paper's)",
    )
    parser.add_argument(
        "--clips", nargs="+", default=list(CLIP_FOLDERS), help="ESC-50 folders under --data (esc50_cc is CC0/CC-BY)"
    )
    parser.add_argument(
        "--stages",
        nargs="+",
        default=None,
        choices=list(STAGES),
        metavar="STAGE",
        help="run only these stages (default: every unfinished one): " + " ".join(STAGES),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teacher",
        default=None,
        help="the AudioSet teacher's weights (EfficientAT mn04_as_mAP_432.pt): the CLAP stand-in is also distilled\n"
        "from it (docs/mini-recipe.md says where to get them)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=(),
        choices=[variant.name for variant in context_ablations.VARIANTS],
        metavar="NAME",
        help="context_ablations: train only these variants (default: all): "
        + " ".join(variant.name for variant in context_ablations.VARIANTS),
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="stages run side by side (subprocesses, logs in <output>/logs); default: 2 on 2 or more cores",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads of each stage (default: cpu_count // jobs)"
    )
    return parser.parse_args(argv)


def mini_run(args: argparse.Namespace) -> MiniRun:
    """The run the parsed arguments describe.

    Raises:
        ValueError: the teacher weights file does not exist.
    """
    scale = load_scale("quick" if args.quick else args.scale)
    teacher = None if args.teacher is None else Path(args.teacher).resolve()
    if teacher is not None and not teacher.is_file():
        raise ValueError(f"{teacher}: no such teacher weights file")
    return MiniRun(
        Path(args.output), Path(args.data), scale, tuple(args.clips), args.seed, stage_names(scale), teacher,
        tuple(args.variants),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_progress_to_stderr((*LOGGED_PACKAGES, "recipes"))
    apply_threads(args.threads)
    try:
        run = mini_run(args)
    except ValueError as error:
        print(f"paircap mini: error: {error}", file=sys.stderr)
        return 2
    try:
        run_stages(run, args.stages, jobs=args.jobs, threads=args.threads)
    except StageFailed as error:
        print(f"paircap mini: {error}", file=sys.stderr)
        return 1
    if args.pack_release:
        print(f"packed the release into {pack_release(run, Path(args.pack_release), mode=args.release_mode)}")
    print(f"results: {Path(args.output, 'RESULTS.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
