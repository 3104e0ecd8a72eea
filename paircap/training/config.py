"""Training configuration: a YAML file per stage or phase (under `configs/`), overridable from the command line."""

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from paircap.training.clip_groups import load_clip_groups
from paircap.training.examples_schedule import check_examples_schedule

STAGES = ("alignment", "raft", "clap_contrastive", "lm_text")
NONFINITE_LOSS_POLICIES = ("stop", "skip")
NEIGHBOR_MODES = ("audio2audio", "pair2pair")


@dataclass
class TrainConfig:
    """Everything one training run needs; field names are the YAML keys and the `--flags` of train_accelerate.py."""

    stage: str = field(
        metadata={
            "help": "alignment (stage 1: projector only), raft (stage 2: IA3 + head + audio tower), clap_contrastive "
            "(a ClapModel on audio-caption pairs) or lm_text (a causal LM on caption text)"
        }
    )
    model_name_or_path: str = field(
        metadata={"help": "folder or hub id to start from: a PairCap release, a ClapModel (clap_contrastive) or a LM"}
    )
    output_dir: str = field(metadata={"help": "checkpoints, logs and the exported release go here"})
    train_pairs: list[str] = field(
        metadata={"help": "caption datasets: save_to_disk folders, parquet folders or hub ids"}
    )
    validation_pairs: list[str] = field(default_factory=list, metadata={"help": "datasets for the validation loss"})
    balance_sources: bool = field(
        default=False,
        metadata={
            "help": "draw every source equally (AudioCaps/Clotho), with replacement: a row drawn twice in one epoch "
            "gets the same crop and augmentation both times (list a small set several times instead to vary them)"
        },
    )
    max_examples: int = field(default=0, metadata={"help": "retrieved pairs per sample, 0..K drawn (0: none)"})
    zero_shot_fraction: float | None = field(
        default=None,
        metadata={"help": "share of zero-shot samples (no retrieved pairs), the rest 1..K; default 1/(K+1)"},
    )
    examples_schedule: list[int] = field(
        default_factory=list,
        metadata={
            "help": "progressive schedule (MQ-Cap): the most retrieved pairs per sample in each epoch, e.g. 1 2 3 4 5; "
            "never decreasing, ending at max_examples, later epochs keep the last; empty: max_examples throughout"
        },
    )
    num_neighbors: int = field(default=10, metadata={"help": "stored retrieved neighbours per training pair"})
    neighbor_mode: str = field(
        default="audio2audio",
        metadata={
            "help": "how training neighbours are ranked: audio2audio (paper) or pair2pair (W S_audio + (1-W) S_text "
            "with the pair's own caption embedding: neighbours sharing an event with it rank up)"
        },
    )
    neighbor_weight: float = field(default=0.5, metadata={"help": "pair2pair neighbours: the audio weight W in [0, 1]"})
    clip_groups: str | None = field(
        default=None,
        metadata={
            "help": "JSON file {audio_id: [clip ids]}: the clips each audio contains (a mixture's components); pairs "
            "whose clips meet are never each other's neighbours"
        },
    )
    query_dropout: float = field(
        default=0.0,
        metadata={
            "help": "share of the training samples with retrieved pairs whose query audio is replaced by faint noise "
            "(their caption must come from the context)"
        },
    )
    distractor_share: float = field(
        default=0.0,
        metadata={
            "help": "share of a sample's retrieved pairs swapped each epoch for random training pairs sharing no audio "
            "with it, so that, as at test time, some are wrong (0: none)"
        },
    )
    shuffle_examples: bool = field(
        default=False,
        metadata={"help": "a sample's retrieved pairs in random order each epoch, not nearest first"},
    )
    retrieval_dir: str | None = field(default=None, metadata={"help": "embedded training set + neighbours cache"})
    train_audio_encoder: bool = field(default=True, metadata={"help": "stage 2: unfreeze the CLAP audio tower"})
    train_language_model: bool = field(
        default=False,
        metadata={"help": "stage 2: train the whole LM decoder, not only IA3 (for a small LM trained from scratch)"},
    )
    train_lm_head: bool = field(
        default=True, metadata={"help": "stage 2: train the LM head (false: it stays frozen with the LM's weights)"}
    )
    text_replay_pairs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "stage 2: caption text (datasets' `caption` column, written with text_template) whose next-token "
            "loss is added to every training batch's, so the LM keeps the words its captions never use"
        },
    )
    text_replay_weight: float = field(default=0.0, metadata={"help": "stage 2: weight of the text_replay_pairs loss"})
    text_replay_batch_size: int | None = field(
        default=None,
        metadata={"help": "stage 2: texts per batch of text_replay_pairs (default: per_device_batch_size)"},
    )
    text_template: str = field(
        default="{caption}",
        metadata={
            "help": "lm_text and text_replay_pairs: how each caption is written as training text ({caption}; "
            "{keywords}: its content words, shuffled)"
        },
    )
    max_text_tokens: int = field(
        default=128, metadata={"help": "lm_text and text_replay_pairs: longest training text, in tokens"}
    )
    augment_gain_db: float = field(
        default=0.0, metadata={"help": "clap_contrastive: random gain of up to +- this many dB per training sample"}
    )
    augment_time_shift: bool = field(
        default=False, metadata={"help": "clap_contrastive: circular time shift of each training sample's features"}
    )
    cache_features: bool = field(
        default=False, metadata={"help": "clap_contrastive: keep short clips' log-mels in memory (small corpora)"}
    )
    distill_targets: str | None = field(
        default=None,
        metadata={
            "help": "clap_contrastive: a teacher's per-clip targets (.npz: audio_ids, embeddings, optional "
            "probabilities; paircap/training/distillation.py) the audio embedding also learns, through heads "
            "dropped on export"
        },
    )
    distill_weight: float = field(default=1.0, metadata={"help": "clap_contrastive: weight of the distillation terms"})
    distill_tag_weight: float = field(
        default=1.0, metadata={"help": "clap_contrastive: weight of the tag BCE within the distillation terms"}
    )
    audio_tower_lr_scale: float = field(
        default=1.0,
        metadata={
            "help": "clap_contrastive: the audio tower (`audio_model`) learns at this x lr; below 1 keeps more of a "
            "pretrained tower, 0 freezes it"
        },
    )
    learning_rate: float = 1e-4
    encoder_lr_scale: float = field(default=0.1, metadata={"help": "audio encoder and LM head lr = scale * lr"})
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    num_epochs: int = 5
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps of the schedule (overrides epochs)"})
    stop_after_steps: int | None = field(default=None, metadata={"help": "stop this run early (time-limited jobs)"})
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16"})
    gradient_checkpointing: bool = False
    num_workers: int = 2
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    save_every: int = 500
    save_total_limit: int = 2
    report_to: list[str] = field(default_factory=list, metadata={"help": "trackers: tensorboard, wandb"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the newest intact checkpoint in output_dir (manifest verified)"}
    )
    nonfinite_loss: str = field(
        default="stop", metadata={"help": "on a NaN/inf loss: stop (error naming the step) or skip the batch"}
    )
    max_skipped_batches: int = field(default=10, metadata={"help": "nonfinite_loss: skip stops after this many"})
    export: bool = field(
        default=True,
        metadata={"help": "write a release folder (IA3 merged) at the end, and for stage 2 its peft adapter"},
    )

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.nonfinite_loss not in NONFINITE_LOSS_POLICIES:
            policies = ", ".join(NONFINITE_LOSS_POLICIES)
            raise ValueError(f"nonfinite_loss must be one of {policies}, got {self.nonfinite_loss!r}")
        if self.max_skipped_batches < 0:
            raise ValueError(f"max_skipped_batches must be >= 0, got {self.max_skipped_batches}")
        if self.stage != "raft" and self.max_examples:
            raise ValueError(f"stage {self.stage} trains without retrieved examples: set max_examples to 0")
        if self.distill_targets and self.stage != "clap_contrastive":
            raise ValueError(f"distill_targets is a clap_contrastive setting, not one of stage {self.stage}")
        if self.audio_tower_lr_scale != 1.0 and self.stage != "clap_contrastive":
            raise ValueError(f"audio_tower_lr_scale is a clap_contrastive setting, not one of stage {self.stage}")
        if self.audio_tower_lr_scale < 0:
            raise ValueError(f"audio_tower_lr_scale must be >= 0, got {self.audio_tower_lr_scale}")
        if self.distill_weight < 0 or self.distill_tag_weight < 0:
            raise ValueError(
                f"distill_weight and distill_tag_weight must be >= 0, got {self.distill_weight}, "
                f"{self.distill_tag_weight}"
            )
        if self.zero_shot_fraction is not None and not (self.max_examples and 0 <= self.zero_shot_fraction <= 1):
            raise ValueError(
                f"zero_shot_fraction must be in [0, 1] with max_examples > 0, got {self.zero_shot_fraction} "
                f"with max_examples={self.max_examples}"
            )
        if self.examples_schedule:
            check_examples_schedule(self.examples_schedule, self.max_examples)
        self._check_neighbour_settings()
        self._check_language_model_settings()

    def _check_neighbour_settings(self) -> None:
        """neighbor_mode, neighbor_weight, query_dropout, distractor_share and the clip groups file (ValueError naming
        it)."""
        if self.neighbor_mode not in NEIGHBOR_MODES:
            raise ValueError(f"neighbor_mode must be one of {', '.join(NEIGHBOR_MODES)}, got {self.neighbor_mode!r}")
        if not 0 <= self.neighbor_weight <= 1:
            raise ValueError(f"neighbor_weight must be in [0, 1], got {self.neighbor_weight}")
        if not (0 <= self.query_dropout <= 1 and (self.max_examples or not self.query_dropout)):
            raise ValueError(
                f"query_dropout must be in [0, 1], and 0 without retrieved pairs, got {self.query_dropout} with "
                f"max_examples={self.max_examples}"
            )
        if not (0 <= self.distractor_share <= 1 and (self.max_examples or not self.distractor_share)):
            raise ValueError(
                f"distractor_share must be in [0, 1], and 0 without retrieved pairs, got {self.distractor_share} with "
                f"max_examples={self.max_examples}"
            )
        if self.clip_groups:
            load_clip_groups(self.clip_groups)

    def _check_language_model_settings(self) -> None:
        """train_lm_head and the text replay are stage-2 settings; a replay needs both its text and a weight."""
        if self.stage != "raft" and not self.train_lm_head:
            raise ValueError(f"train_lm_head is a raft setting: stage {self.stage} sets which parts train itself")
        if self.text_replay_weight < 0:
            raise ValueError(f"text_replay_weight must be >= 0, got {self.text_replay_weight}")
        if bool(self.text_replay_pairs) != bool(self.text_replay_weight) or (
            self.text_replay_pairs and self.stage != "raft"
        ):
            raise ValueError(
                "text_replay_pairs and text_replay_weight > 0 go together, in stage raft only, got "
                f"{self.text_replay_pairs} with weight {self.text_replay_weight} in stage {self.stage}"
            )
        if self.text_replay_batch_size is not None and self.text_replay_batch_size < 1:
            raise ValueError(f"text_replay_batch_size must be >= 1, got {self.text_replay_batch_size}")

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return Path(self.output_dir) / "release"

    @property
    def adapter_dir(self) -> Path:
        return Path(self.output_dir) / "adapter"


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """`--config FILE.yaml` gives the defaults; any other `--field value` overrides them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(TrainConfig)
    parser.add_argument("--config", default=None, help="YAML file with the run's settings")
    if known.config:
        values = yaml.safe_load(Path(known.config).read_text()) or {}
        unknown = set(values) - {f for f in TrainConfig.__dataclass_fields__}
        if unknown:
            raise ValueError(f"{known.config}: unknown settings {sorted(unknown)}")
        parser.set_defaults(**values)
        for action in parser._actions:  # fields given in the file are no longer required on the command line
            if action.dest in values:
                action.required = False
    config, _ = parser.parse_args_into_dataclasses(args=argv)
    return config
