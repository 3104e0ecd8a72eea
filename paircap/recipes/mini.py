"""The mini recipe: the whole PairCap pipeline, trained and evaluated on real ESC-50 audio in minutes on 2 CPU cores.

    paircap mini --output runs/mini            # the full run (RESULTS.md, 27-35 minutes on 2 cores)
    paircap mini --output runs/quick --quick   # every stage for a few steps (smoke test)

(`python -m paircap.recipes.mini ...` is the same command.)

Stages, each resumable (a finished stage is skipped on a rerun; an interrupted training resumes from its last
checkpoint, an interrupted embedding from its last shard):

1. `corpus`: ESC-50 clips split by source recording; two-event mixtures with several captions each (AL-mixgen), and
   noisy mixtures whose captions name a wrong class (standing in for WavCaps' weak labels); the caption text of
   AudioCaps and Clotho (no audio) for the language model.
2. `init`: tokenizers trained on that text, and a small random CLAP and Llama.
3. `clap`, `lm`: the stand-ins for `laion/clap-htsat-unfused` and Vicuna (`clap_contrastive`, `lm_text` stages).
4. `assemble`: the PairCap release from the two.
5. `kb`: knowledge bases *base* (training pairs), *large* (base + noisy pairs) and *refined* (large refined with the
   training pairs, paper §3.5), in the frozen CLAP space.
6. `stage1`, `stage2_phase1`, `stage2_phase2`, `raft_only`: the paper's training recipe (§3.2, §4.1).
7. `evaluate`, `evaluate_raft_only`, `evaluate_stage1`: `paircap evaluate` on the test mixtures (method x KB grid,
   W sweep, top-k sweep), plus event accuracy; `fit` and `zero_shot`: every captioner zero-shot on its own training
   data, and on a larger sample of test mixtures.
8. `report`: RESULTS.md.

With `--jobs 2` (the default on 2 or more cores) stages that do not read each other's outputs run side by side, as
subprocesses with their logs in `<output>/logs/` (`STAGE_INPUTS`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from datasets import (
    Dataset,
    concatenate_datasets,
    disable_progress_bars,
    enable_progress_bars,
    load_from_disk,
)
from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel, LlamaForCausalLM
from transformers.utils import logging

from datasets_scripts.mixtures import event_accuracy, mixture_events, write_mixtures
from datasets_scripts.readers import read_audiocaps, read_clotho, with_path_audio
from datasets_scripts.readers.esc50 import (
    EVENT_PHRASES,
    Esc50Clip,
    read_esc50_manifests,
    single_clip_pairs,
    split_by_source,
)
from modeling_paircap.prompting_paircap import DEFAULT_PROMPT_TEMPLATE, PromptFormat
from paircap.recipes.concurrent_stages import StageFailed, run_concurrent_stages
from paircap.recipes.mini_models import mini_clap_config, mini_feature_extractor, mini_llama_config
from paircap.recipes.mini_probe import (
    clap_audio_embeddings,
    first_row_per_clip,
    log_mel_windows,
    probe_representations,
)
from paircap.tiny import train_clap_tokenizer, train_lm_tokenizer

logger = logging.get_logger(__name__)

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CLIP_FOLDERS = ("esc50_cc", "esc50_more")
SINGLE_CLIP_REPEATS = 9  # + the copy in the training pairs: 10 x 752 single-clip rows beside 7,500 mixture rows
AUDIO_ROOT = "esc50_mini"  # the KBs record clip locations under this root name (the corpus folder)
MODES = ("audio2audio", "audio2mixture", "generative_pair2pair")
KNOWLEDGE_BASES = ("refined", "large", "base")  # the first is the one the W and top-k sweeps run on


@dataclass(frozen=True)
class MiniScale:
    """How much of everything: the full run and `--quick` differ only here."""

    name: str = "full"
    clips_per_split: int | None = None  # ESC-50 clips kept per split (None: all)
    train_mixtures: int = 1500
    validation_mixtures: int = 100
    test_mixtures: int = 200  # the method x KB grid and the sweeps
    zero_shot_test_mixtures: int = 1000  # zero-shot event accuracy (these include the grid's 200)
    noisy_mixtures: int = 1000
    text_captions: int | None = None  # AudioCaps + Clotho captions for the LM (None: all)
    # ~6 epochs of the single clips (x10) and the mixtures at batch 32. With 2000 steps (run 6) the captioners fitted
    # half as much of their training data and named a third as many test events; with --jobs 2 the CLAP stage runs
    # beside the longer LM stage, so its last 1000 steps cost no wall time (RESULTS.md)
    clap_steps: int = 3000
    lm_steps: int = 1000
    stage1_steps: int = 800
    phase1_steps: int = 400
    phase2_steps: int = 400
    batch_size: int = 16
    num_workers: int = 1
    max_examples: int = 4
    weight_sweep: tuple[float, ...] = (0.1, 0.3, 0.7, 0.9)
    top_k_sweep: tuple[int, ...] = (1, 2, 6)
    max_new_tokens: int = 24
    fit_mixtures: int = 200  # training mixtures the `fit` stage captions (with every training single clip)
    ablations: bool = True  # RAFT-only training, the sweeps and the stage-1 evaluation
    # Stage 2's audio tower and LM head lr = scale x lr. The paper's 0.1 fine-tunes a pretrained HTSAT; the mini's
    # CLAP is trained from scratch on ~200 clips and barely generalises, so its captioning copy learns at full lr.
    encoder_lr_scale: float = 1.0
    # Stage 2 trains the whole LM decoder, not only IA3 (a deviation from the paper: the 4-layer LM trained from
    # scratch ignores the audio tokens with IA3 alone; see RESULTS.md).
    train_language_model: bool = True


FULL = MiniScale()
QUICK = MiniScale(
    name="quick",
    clips_per_split=30,
    train_mixtures=24,
    validation_mixtures=4,
    test_mixtures=6,
    zero_shot_test_mixtures=8,
    noisy_mixtures=12,
    text_captions=400,
    clap_steps=3,
    lm_steps=3,
    stage1_steps=2,
    phase1_steps=2,
    phase2_steps=2,
    batch_size=4,
    num_workers=0,
    max_examples=2,
    weight_sweep=(0.9,),
    top_k_sweep=(1,),
    max_new_tokens=6,
    fit_mixtures=4,
)
# The shipped mini release (`--scale release --clips esc50_cc`): the curriculum model and its grid only.
RELEASE = MiniScale(
    name="release",
    train_mixtures=400,
    validation_mixtures=40,
    test_mixtures=60,
    zero_shot_test_mixtures=200,
    noisy_mixtures=200,
    clap_steps=1500,
    lm_steps=500,
    stage1_steps=600,
    phase1_steps=400,
    phase2_steps=400,
    ablations=False,
)
SCALES = {"full": FULL, "quick": QUICK, "release": RELEASE}
CAPTIONERS = ("stage1", "stage2_phase1", "stage2_phase2", "raft_only")
# the stages whose outputs each stage reads: with --jobs > 1 a stage starts once these have finished
STAGE_INPUTS = {
    "corpus": (),
    "init": ("corpus",),
    "clap": ("init",),
    "probe": ("clap",),
    "lm": ("init",),
    "assemble": ("clap", "lm"),
    "kb": ("assemble",),
    "stage1": ("assemble",),
    "stage2_phase1": ("stage1",),
    "stage2_phase2": ("stage2_phase1",),
    "raft_only": ("stage1",),
    "evaluate": ("kb", "stage2_phase2"),
    "evaluate_raft_only": ("kb", "raft_only"),
    "evaluate_stage1": ("kb", "stage1"),
    "fit": CAPTIONERS,
    "zero_shot": CAPTIONERS,
}
STAGE_INPUTS["report"] = tuple(STAGE_INPUTS)


def lm_text_template(template: dict = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The caption as the assistant's answer to one prompt turn whose audio's place holds the caption's keywords,
    shuffled: the LM learns the chat frame of PairCap's prompts (Vicuna's role), caption language, and to write what
    the turn holds. Trained on an empty turn, it learnt to ignore the turn, and later its audio tokens (RESULTS.md)."""
    prompt = PromptFormat.from_template(template)
    return prompt.preamble + prompt.turn("{keywords}") + " {caption}"


class MiniRecipe:
    """The recipe's folder layout and stages; `run()` runs the stages that have not finished yet."""

    def __init__(self, output: Path, data: Path, scale: MiniScale, clip_folders=CLIP_FOLDERS, seed: int = 0):
        self.output, self.data, self.scale, self.seed = Path(output), Path(data), scale, seed
        self.clip_folders = tuple(clip_folders)
        # with --jobs > 1, stages that are ready together start in this order: those on the longest chain first (the
        # CLAP and LM, then stage 1 and stage 2), the probe and the KBs, which only the evaluations read, after them
        self.stages: list[tuple[str, Callable[[], None]]] = [
            ("corpus", self.corpus),
            ("init", self.init_models),
            ("clap", self.train_clap),
            ("lm", self.train_lm),
            ("assemble", self.assemble),
            ("stage1", lambda: self.train_captioner("stage1", "alignment", self.path("assembled"), 0)),
            ("probe", self.probe_audio),
            ("kb", self.knowledge_bases),
            ("stage2_phase1", lambda: self.train_captioner("stage2_phase1", "raft", self.release("stage1"), 0)),
            (
                "stage2_phase2",
                lambda: self.train_captioner(
                    "stage2_phase2", "raft", self.release("stage2_phase1"), scale.max_examples
                ),
            ),
            (
                "raft_only",
                lambda: self.train_captioner("raft_only", "raft", self.release("stage1"), scale.max_examples),
            ),
            ("evaluate", lambda: self.evaluate("stage2_phase2")),
            ("evaluate_raft_only", lambda: self.evaluate("raft_only")),
            ("evaluate_stage1", lambda: self.evaluate("stage1")),
            ("fit", self.training_fit),
            ("zero_shot", self.zero_shot_test),
            ("report", self.report),
        ]
        if not scale.ablations:
            ablations = {"raft_only", "evaluate_raft_only", "evaluate_stage1"}
            self.stages = [(name, stage) for name, stage in self.stages if name not in ablations]

    @property
    def captioners(self) -> list[str]:
        names = {name for name, _ in self.stages}
        return [name for name in CAPTIONERS if name in names]

    # ---- layout -------------------------------------------------------------------------------------------------

    def path(self, *parts: str) -> Path:
        return self.output.joinpath(*parts)

    def release(self, stage: str) -> Path:
        return self.path(stage, "release")

    def pairs(self, name: str) -> Path:
        return self.path("corpus", "pairs", name)

    def validation_pairs(self) -> list[str]:
        return [str(self.pairs("validation"))] if self.pairs("validation").is_dir() else []

    @property
    def mixtures_dir(self) -> Path:
        return self.path("corpus", "mixtures")

    def stage_record(self, name: str) -> Path:
        return self.path("stages", f"{name}.json")

    # ---- running --------------------------------------------------------------------------------------------------

    def run(self, only: list[str] | None = None, jobs: int = 1) -> None:
        """Run the stages not finished yet (of `only`, if given): in this process one after another, or with `jobs`
        > 1 as subprocesses, up to `jobs` at a time, each once its `STAGE_INPUTS` have finished."""
        self.path("stages").mkdir(parents=True, exist_ok=True)
        settings = {"scale": asdict(self.scale), "clip_folders": self.clip_folders, "seed": self.seed}
        self.path("settings.json").write_text(json.dumps(settings, indent=2))
        todo = []
        for index, (name, _) in enumerate(self.stages, start=1):
            if only and name not in only:
                continue
            if self.stage_record(name).is_file() and name != "report":
                logger.info(f"[{index}/{len(self.stages)}] {name}: done earlier, skipped")
                continue
            todo.append(name)
        if jobs > 1 and len(todo) > 1:
            if SCALES.get(self.scale.name) != self.scale:
                raise ValueError(
                    f"--jobs > 1 runs stages as `paircap mini --scale NAME`: {self.scale} is not in SCALES"
                )
            run_concurrent_stages(
                todo, STAGE_INPUTS, self.stage_command, self.path("logs"), jobs, on_success=self.record_process_span
            )
            return
        stages = dict(self.stages)
        for name in todo:
            index = list(stages).index(name) + 1
            logger.info(f"[{index}/{len(self.stages)}] {name}")
            started, start = time.time(), time.perf_counter()
            stages[name]()
            seconds = time.perf_counter() - start
            record = {"stage": name, "seconds": seconds, "started": started, "finished": time.time()}
            self.stage_record(name).write_text(json.dumps(record))
            logger.info(f"[{index}/{len(self.stages)}] {name}: {seconds:.0f} s")

    def record_process_span(self, name: str, started: float, finished: float) -> None:
        """A stage's record gets the span of the process that ran it, imports and start-up included (the report's wall
        time is the union of these spans)."""
        record = json.loads(self.stage_record(name).read_text())
        self.stage_record(name).write_text(json.dumps(record | {"started": started, "finished": finished}))

    def stage_command(self, name: str) -> list[str]:
        """The command that runs one stage of this recipe in its own process."""
        return [
            sys.executable, "-m", "paircap.cli", "mini", "--output", str(self.output), "--data", str(self.data),
            "--scale", self.scale.name, "--clips", *self.clip_folders, "--seed", str(self.seed), "--stages", name,
            "--jobs", "1",
        ]  # fmt: skip

    # ---- 1. data --------------------------------------------------------------------------------------------------

    def clip_splits(self) -> dict[str, list[Esc50Clip]]:
        """The ESC-50 clips of each split, by source recording (deterministic by seed)."""
        clips = read_esc50_manifests([self.data / folder for folder in self.clip_folders])
        splits = split_by_source(clips, seed=self.seed)
        return {split: part[: self.scale.clips_per_split] for split, part in splits.items()}

    def corpus(self) -> None:
        """ESC-50 singles and mixtures per split, noisy training mixtures, and the LM's caption text."""
        s = self.scale
        splits = self.clip_splits()
        test_count = max(s.test_mixtures, s.zero_shot_test_mixtures)
        counts = {"train": s.train_mixtures, "validation": s.validation_mixtures, "test": test_count}
        mixtures = {  # esc50_cc alone (about 2 recordings per class) leaves no clip for validation
            split: write_mixtures(splits[split], self.mixtures_dir, counts[split], split, seed=self.seed)
            for split in counts
            if len({clip.category for clip in splits[split]}) >= 2
        }
        noisy = write_mixtures(
            splits["train"], self.mixtures_dir, s.noisy_mixtures, "train", seed=self.seed + 1, wrong_events=1
        )
        clip_pairs = single_clip_pairs(splits["train"], "train")
        save(clip_pairs, self.pairs("train_clips"))
        train = concatenate_datasets([clip_pairs, mixtures["train"]])
        save(train, self.pairs("train"))
        if "validation" in mixtures:
            save(mixtures["validation"], self.pairs("validation"))
        grid = set(list(dict.fromkeys(mixtures["test"]["audio_id"]))[: s.test_mixtures])  # the first mixtures
        save(mixtures["test"].filter(lambda clip: clip in grid, input_columns="audio_id"), self.pairs("test"))
        save(mixtures["test"], self.pairs("test_all"))
        save(noisy, self.pairs("noisy"))
        save(self.caption_text(train), self.pairs("text"))
        summary = {
            "clips": {split: len(part) for split, part in splits.items()},
            "categories": {split: len({c.category for c in part}) for split, part in splits.items()},
            "pairs": {name: len(load_from_disk(str(self.pairs(name)))) for name in [*mixtures, "test_all"]},
            "noisy_pairs": len(noisy),
            "text_captions": len(load_from_disk(str(self.pairs("text")))),
        }
        self.path("corpus", "summary.json").write_text(json.dumps(summary, indent=2))

    def caption_text(self, train: Dataset) -> Dataset:
        """AudioCaps train and Clotho development captions (text only) with the ESC-50 training captions."""
        captions = self.data / "captions"
        audiocaps = read_audiocaps(captions, "train", text_only=True, captions_csv=captions / "audiocaps_train.csv")
        clotho = read_clotho(captions, "development", text_only=True, captions_csv=captions / "clotho_development.csv")
        text = concatenate_datasets([audiocaps, clotho]).shuffle(seed=self.seed)
        if self.scale.text_captions is not None:
            text = text.select(range(min(self.scale.text_captions, len(text))))
        own = train.select_columns(["pair_id", "caption", "source"])
        return concatenate_datasets([text.select_columns(["pair_id", "caption", "source"]), own])

    # ---- 2-4. the stand-ins for the pretrained parts, and the assembled release --------------------------------

    def init_models(self) -> None:
        """Tokenizers trained on the caption text; a small random CLAP and Llama in Hugging Face layout."""
        corpus = list(load_from_disk(str(self.pairs("text")))["caption"])
        lm_corpus = [lm_text_template().format(caption=caption, keywords="") for caption in corpus[:2000]] + corpus
        lm_tokenizer = train_lm_tokenizer(vocab_size=2000, corpus=lm_corpus)
        clap_tokenizer = train_clap_tokenizer(vocab_size=1000, corpus=corpus)
        torch.manual_seed(self.seed)
        ClapModel(mini_clap_config(len(clap_tokenizer))).save_pretrained(self.path("init", "clap"))
        mini_feature_extractor().save_pretrained(self.path("init", "clap"))
        clap_tokenizer.save_pretrained(self.path("init", "clap"))
        LlamaForCausalLM(mini_llama_config(len(lm_tokenizer))).save_pretrained(self.path("init", "lm"))
        lm_tokenizer.save_pretrained(self.path("init", "lm"))

    def train_clap(self) -> None:
        self.train_stage(
            "clap",
            stage="clap_contrastive",
            model_name_or_path=str(self.path("init", "clap")),
            # single clips and training mixtures about half and half: trained on single clips only, its embedding
            # of a mixture names at most one event. The single clips are listed again, not drawn by source weights
            # (`balance_sources`): a row drawn twice in an epoch gets the same augmentation, a repeated row its own
            train_pairs=[str(self.pairs("train_clips"))] * SINGLE_CLIP_REPEATS + [str(self.pairs("train"))],
            validation_pairs=self.validation_pairs(),
            max_steps=self.scale.clap_steps,
            per_device_batch_size=max(self.scale.batch_size * 2, 4),
            learning_rate=1e-3,
            weight_decay=0.1,
            augment_gain_db=10.0,
            augment_time_shift=True,
            cache_features=True,
            num_workers=0,
        )
        self.path("clap", "retrieval.json").write_text(json.dumps(self.clap_retrieval(), indent=2))

    def clap_retrieval(self) -> dict:
        """The trained CLAP on the test mixtures: audio-to-caption recall (is one of a clip's own captions the nearest
        of all test captions, R@1, or among the nearest 5 / 10), and how often the two classes whose event phrases
        (averaged) are nearest to a mixture are its two events: what the audio embedding alone can name."""
        model = ClapModel.from_pretrained(self.release("clap")).eval()
        feature_extractor = ClapFeatureExtractor.from_pretrained(self.release("clap"))
        tokenizer = AutoTokenizer.from_pretrained(self.release("clap"))
        pairs = load_from_disk(str(self.pairs("test")))
        clip_ids = list(pairs["audio_id"])
        clip_rows = first_row_per_clip(pairs)
        clips = list(clip_rows["audio_id"])
        audio = clap_audio_embeddings(model, log_mel_windows(clip_rows, feature_extractor), batch_size=16)
        with torch.no_grad():
            text = model.get_text_features(
                **tokenizer(list(pairs["caption"]), padding=True, truncation=True, return_tensors="pt")
            ).pooler_output
        scores = audio @ torch.nn.functional.normalize(text, dim=-1).T
        position = {clip: index for index, clip in enumerate(clips)}
        owner = torch.tensor([position[clip] for clip in clip_ids])
        ranked = owner[scores.argsort(dim=1, descending=True)]
        hit_rank = (ranked == torch.arange(len(clips))[:, None]).float().argmax(dim=1)
        recall = {f"audio_to_caption_recall@{k}": float((hit_rank < k).float().mean()) for k in (1, 5, 10)}
        classes = sorted(EVENT_PHRASES)
        with torch.no_grad():
            class_texts = torch.stack(
                [
                    torch.nn.functional.normalize(
                        model.get_text_features(
                            **tokenizer(list(EVENT_PHRASES[name]), padding=True, return_tensors="pt")
                        ).pooler_output,
                        dim=-1,
                    ).mean(dim=0)
                    for name in classes
                ]
            )
        top2 = (audio @ class_texts.T).topk(2, dim=1).indices
        events = mixture_events(self.mixtures_dir)
        named = [{classes[i] for i in row} for row in top2.tolist()]
        both = np.mean([guess == set(events[clip]) for guess, clip in zip(named, clips, strict=True)])
        return {
            "test_clips": len(clips),
            "test_captions": len(clip_ids),
            **recall,
            "zero_shot_top2_both_events": float(both),
        }

    def probe_audio(self) -> None:
        """Linear probes of what the trained CLAP's audio embedding (and, as yardsticks, log-mel statistics in and out
        of frequency order) can name: held-out single clips, and both events of the test mixtures (`clap/probes.json`).
        """
        splits = self.clip_splits()
        train = load_from_disk(str(self.pairs("train")))
        pairs = {
            "train_clips": load_from_disk(str(self.pairs("train_clips"))),
            "test_clips": single_clip_pairs(splits["test"], "test"),
            "train_mixtures": train.filter(lambda source: source == "esc50_mix", input_columns="source"),
            "test_mixtures": load_from_disk(str(self.pairs("test"))),
        }
        events = {clip.audio_id: (clip.category,) for part in splits.values() for clip in part}
        events.update(mixture_events(self.mixtures_dir))
        probes = probe_representations(str(self.release("clap")), pairs, events)
        self.path("clap", "probes.json").write_text(json.dumps(probes, indent=2))

    def train_lm(self) -> None:
        self.train_stage(
            "lm",
            stage="lm_text",
            model_name_or_path=str(self.path("init", "lm")),
            train_pairs=[str(self.pairs("text"))],
            max_steps=self.scale.lm_steps,
            per_device_batch_size=max(self.scale.batch_size * 4, 4),
            learning_rate=2e-3,
            text_template=lm_text_template(),
        )

    def assemble(self) -> None:
        from paircap.assembly import assemble_release

        # torch log-mels (the same features as ClapFeatureExtractor's): the numpy extractor took 3x the model's time
        # in a training step on 2 cores, and every stage, knowledge base and release after this one inherits it
        assemble_release(
            str(self.release("clap")),
            str(self.release("lm")),
            self.path("assembled"),
            seed=self.seed,
            feature_backend="torch",
        )

    # ---- 5. knowledge bases ---------------------------------------------------------------------------------------

    def audio_roots(self) -> dict[str, Path]:
        """The KBs' clip roots: the corpus (mixtures) and each ESC-50 folder, so no KB records a machine's paths."""
        return {AUDIO_ROOT: self.path("corpus"), **{name: self.data / name for name in self.clip_folders}}

    def knowledge_bases(self) -> None:
        """base, large and refined, embedded by the assembled release's CLAP (the frozen retrieval space)."""
        from transformers import AutoModel, AutoProcessor

        from datasets_scripts.build_kb import build_knowledge_base, refine_knowledge_base_folder

        model = AutoModel.from_pretrained(self.path("assembled"), trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(self.path("assembled"), trust_remote_code=True)
        roots = self.audio_roots()
        train = load_from_disk(str(self.pairs("train")))
        noisy = load_from_disk(str(self.pairs("noisy")))
        options = {"batch_size": 32, "num_workers": self.scale.num_workers, "roots": roots}
        build_knowledge_base(train, model, processor, self.path("kb", "base"), {"name": "mini-base"}, **options)
        large = concatenate_datasets([train, noisy])
        build_knowledge_base(large, model, processor, self.path("kb", "large"), {"name": "mini-large"}, **options)
        refine_knowledge_base_folder(self.path("kb", "large"), self.path("kb", "base"), self.path("kb", "refined"))

    # ---- 6. the paper's training recipe ----------------------------------------------------------------------------

    def train_captioner(self, name: str, stage: str, start: Path, max_examples: int) -> None:
        s = self.scale
        steps = {
            "stage1": s.stage1_steps,
            "stage2_phase1": s.phase1_steps,
            "stage2_phase2": s.phase2_steps,
            "raft_only": s.phase1_steps + s.phase2_steps,
        }[name]
        self.train_stage(
            name,
            stage=stage,
            model_name_or_path=str(start),
            train_pairs=[str(self.pairs("train"))],
            validation_pairs=self.validation_pairs(),
            max_examples=max_examples,
            max_steps=steps,
            per_device_batch_size=s.batch_size,
            learning_rate=1e-3 if stage == "alignment" else 3e-4,
            encoder_lr_scale=s.encoder_lr_scale,
            train_language_model=s.train_language_model,
        )

    def train_stage(self, name: str, **settings) -> None:
        """Write the stage's training config (`<stage>/config.yaml`) and run it as `train_accelerate.py` would, with
        `--resume`: an interrupted stage continues from its last checkpoint."""
        from paircap.training.config import parse_config
        from paircap.training.loop import train

        steps = settings["max_steps"]
        config = {
            "output_dir": str(self.path(name)),
            "num_workers": self.scale.num_workers,
            "seed": self.seed,
            "warmup_ratio": 0.05,
            "log_every": max(1, steps // 10),
            "eval_every": max(1, steps // 2),
            "save_every": max(1, steps // 4),
            **settings,
        }
        path = self.path(name, "config.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        train(parse_config(["--config", str(path), "--resume"]))

    # ---- 7. evaluation ---------------------------------------------------------------------------------------------

    def paircap_evaluate(self, model: str, output: Path, data: Path, data_name: str, *options: str) -> None:
        """`paircap evaluate` of one stage's release on `data` (CPU, the scale's batch size and caption length)."""
        from paircap.cli import main as paircap

        argv = [
            "evaluate", "--model", str(self.release(model)), "--data", str(data), "--data-name", data_name,
            "--split", data.name, "--batch-size", str(self.scale.batch_size),
            "--max-new-tokens", str(self.scale.max_new_tokens), "--device", "cpu", "--no-progress", *options,
            "--output-dir", str(output),
        ]  # fmt: skip
        if paircap(argv) != 0:
            raise RuntimeError(f"paircap {' '.join(argv)} failed (its error is above)")

    def evaluate(self, model: str) -> None:
        """One captioner on the test mixtures: the curriculum model on the grid and both sweeps; stage 1 and RAFT-only
        (the training ablation) with generative pair-to-pair on the refined KB."""
        kbs = [str(self.path("kb", name)) for name in KNOWLEDGE_BASES]
        roots = [
            option for name, folder in self.audio_roots().items() for option in ("--audio-root", f"{name}={folder}")
        ]
        options = [*roots, "--top-k", str(self.scale.max_examples)]
        if model != "stage2_phase2":
            options += ["--kb", kbs[0], "--mode", "generative_pair2pair"]
        elif self.scale.ablations:
            options += ["--kb", *kbs, "--weight-sweep", *map(str, self.scale.weight_sweep)]
            options += ["--top-k-sweep", *map(str, self.scale.top_k_sweep)]
        else:
            options += ["--kb", *kbs]
        output = self.path("evaluation", model)
        if not (output / "results.json").is_file():
            self.paircap_evaluate(model, output, self.pairs("test"), "esc50-mixtures", *options)
        (output / "events.json").write_text(json.dumps(self.event_scores(output), indent=2))

    def event_scores(self, evaluation: Path) -> dict:
        """Per run: the share of test mixtures whose caption names both of its events (and at least one)."""
        events = mixture_events(self.mixtures_dir)
        scores = {}
        for path in sorted((evaluation / "predictions").glob("*.jsonl")):
            records = read_predictions(path)
            captions = {r["audio_id"]: r["caption"] for r in records if "caption" in r}
            zero_shot = {r["audio_id"]: r["zero_shot_caption"] for r in records if r.get("zero_shot_caption")}
            scores[path.stem] = {
                "final": event_accuracy(captions, {clip: events[clip] for clip in captions}),
                "zero_shot_pass": event_accuracy(zero_shot, {clip: events[clip] for clip in zero_shot})
                if zero_shot
                else None,
            }
        return scores

    def training_fit(self) -> None:
        """
        Every trained captioner, zero-shot, on audio it was trained on: the single training clips and the first
        `fit_mixtures` training mixtures (`evaluation/fit.json`: the share whose caption names the clip's event, or
        both and at least one of a mixture's). Beside the test scores, this tells underfitting from not generalising.
        """
        train = load_from_disk(str(self.pairs("train")))
        singles = {clip.audio_id: (clip.category,) for clip in self.clip_splits()["train"]}
        events = mixture_events(self.mixtures_dir)
        mixtures = sorted({clip for clip in train["audio_id"] if clip in events})[: self.scale.fit_mixtures]
        keep = set(singles) | set(mixtures)
        sample = self.path("evaluation", "fit", "train")
        if not sample.is_dir():
            save(train.filter(lambda clip: clip in keep, input_columns="audio_id"), sample)
        groups = {"train_clips": singles, "train_mixtures": {clip: events[clip] for clip in mixtures}}
        fit = self.zero_shot_event_scores(sample, "esc50-train", self.path("evaluation", "fit"), groups)
        self.path("evaluation", "fit.json").write_text(json.dumps(fit, indent=2))

    def zero_shot_test(self) -> None:
        """Every captioner zero-shot on the `zero_shot_test_mixtures` test mixtures (`evaluation/zero_shot.json`):
        the share whose caption names both events, counted over five times the grid's mixtures."""
        events = mixture_events(self.mixtures_dir)
        sample = load_from_disk(str(self.pairs("test_all")))
        groups = {"test_mixtures": {clip: events[clip] for clip in dict.fromkeys(sample["audio_id"])}}
        scores = self.zero_shot_event_scores(
            self.pairs("test_all"), "esc50-mixtures", self.path("evaluation", "zero_shot"), groups
        )
        self.path("evaluation", "zero_shot.json").write_text(json.dumps(scores, indent=2))

    def zero_shot_event_scores(self, data: Path, data_name: str, output: Path, groups: dict[str, dict]) -> dict:
        """Every captioner zero-shot on `data` (`output/<model>`): per model, the event accuracy of each group of
        clips (audio_id -> events), the number of distinct captions and the run's CIDEr-D."""
        scores = {}
        for model in self.captioners:
            if not (output / model / "results.json").is_file():
                self.paircap_evaluate(model, output / model, data, data_name)  # no --kb: zero-shot only
            (predictions,) = sorted((output / model / "predictions").glob("*.jsonl"))  # the one zero-shot run
            captions = {r["audio_id"]: r["caption"] for r in read_predictions(predictions) if "caption" in r}
            (run,) = json.loads((output / model / "results.json").read_text())["runs"]
            scores[model] = {
                group: event_accuracy({clip: captions[clip] for clip in clips if clip in captions}, clips)
                for group, clips in groups.items()
            }
            scores[model] |= {
                "distinct_captions": len(set(captions.values())),
                "cider_d": run["metrics"].get("cider_d"),
            }
        return scores

    # ---- 8. report ------------------------------------------------------------------------------------------------

    def report(self) -> None:
        from paircap.recipes.mini_report import write_results

        write_results(self)


def read_predictions(path: Path) -> list[dict]:
    """The records of a `paircap evaluate` predictions file (its first line is the run's settings)."""
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def save(dataset: Dataset, path: Path) -> None:
    """
    `save_to_disk` through a temporary folder, so a stage interrupted mid-write never leaves a half dataset; the audio
    column keeps its paths (`with_path_audio`).
    """
    dataset = with_path_audio(dataset)
    temporary = path.with_name(path.name + ".tmp")
    disable_progress_bars()
    dataset.save_to_disk(str(temporary))
    enable_progress_bars()
    if path.exists():
        shutil.rmtree(path)
    temporary.rename(path)


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
    parser.add_argument("--scale", choices=sorted(SCALES), default="full", help="see MiniScale")
    parser.add_argument("--quick", action="store_true", help="--scale quick: every stage for a few steps (smoke test)")
    parser.add_argument("--pack-release", default=None, help="then write the curriculum model with its refined KB here")
    parser.add_argument(
        "--clips", nargs="+", default=list(CLIP_FOLDERS), help="ESC-50 folders under --data (esc50_cc is CC0/CC-BY)"
    )
    parser.add_argument("--stages", nargs="+", default=None, help="run only these stages (default: all unfinished)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=min(2, os.cpu_count() or 1),
        help="stages run side by side (subprocesses, logs in <output>/logs); default: 2 on 2 or more cores",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else SCALES[args.scale]
    recipe = MiniRecipe(Path(args.output), Path(args.data), scale, args.clips, args.seed)
    try:
        recipe.run(args.stages, jobs=args.jobs)
    except StageFailed as error:
        print(f"paircap mini: {error}", file=sys.stderr)
        return 1
    if args.pack_release:
        from paircap.recipes.mini_release import pack_release

        print(f"packed the release into {pack_release(recipe, Path(args.pack_release))}")
    print(f"results: {Path(args.output, 'RESULTS.md')}")
    return 0


if __name__ == "__main__":  # the alias the mini recipe was introduced with
    from paircap.cli import main as paircap_main

    sys.exit(paircap_main(["mini", *sys.argv[1:]]))
