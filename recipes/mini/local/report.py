"""Stage `report`: RESULTS.md of a mini run: data, wall time per stage, the stand-ins' quality, the paper's tables,
what the field added since (CLAP rescoring, the progressive schedule) and the paper's claims."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
from pathlib import Path

import torch

from hub_cards.evaluation_tables import similarity_table
from paircap.statistics import wilson_interval
from recipes.mini.local import claims
from recipes.mini.local.context_ablations import VARIANTS
from recipes.mini.local.evaluation import MODES
from recipes.mini.local.layout import CURRICULUM, MiniRun
from recipes.mini.local.mechanism import mechanism_table
from recipes.mini.local.novel_words import RESULT_FILE as WORDS_FILE
from recipes.mini.local.novel_words import words_table
from recipes.mini.local.progressive import STAGE as PROGRESSIVE

METRIC = "cider_d"  # SPICE (and so SPIDEr) needs Java; CIDEr-D is meaningful with 5 references per mixture


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class Evaluation:
    """One model's `paircap evaluate` output with the recipe's event accuracy, looked up by run."""

    def __init__(self, folder: Path):
        self.results = load_json(folder / "results.json") or {"runs": []}
        self.events = load_json(folder / "events.json") or {}
        self.runs = {run["name"]: run for run in self.results["runs"]}

    def find(self, mode: str, kb: str | None = None, weight: float | None = None, top_k: int | None = None):
        for run in self.results["runs"]:
            kb_name = Path(run["knowledge_base"]).name if run["knowledge_base"] else None
            matches = run["mode"] == mode and (kb is None or kb_name == kb)
            matches = matches and (weight is None or run["fusion_weight"] == weight)
            if matches and (top_k is None or run["top_k"] == top_k):
                return run
        return None

    def cider(self, run: dict | None) -> float | None:
        return None if run is None else run["metrics"].get(METRIC)

    def both(self, run: dict | None, which: str = "final", share: str = "both") -> float | None:
        """Share of test mixtures whose caption names both events (`share="any"`: at least one)."""
        scores = None if run is None else (self.events.get(run["name"]) or {}).get(which)
        return None if scores is None else scores[share]

    def cell(self, run: dict | None) -> str:
        return f"{num(self.cider(run))} / {pct(self.both(run))}"


def grid_table(evaluation: Evaluation, kbs: list[str], grid_weight: float, grid_top_k: int) -> str:
    zero = evaluation.find("none")
    lines = [f"| method | {' | '.join(kbs)} |", "|---|" + "---:|" * len(kbs)]
    lines.append(f"| zero-shot | {' | '.join([evaluation.cell(zero)] * len(kbs))} |")
    for mode in MODES:
        cells = [evaluation.cell(evaluation.find(mode, kb, grid_weight, grid_top_k)) for kb in kbs]
        lines.append(f"| {mode} | {' | '.join(cells)} |")
    return "\n".join(lines)


def search_table(evaluation: Evaluation, kbs: list[str], grid_weight: float, grid_top_k: int) -> str:
    """The grid's retrieval settings: the share of test mixtures whose caption names at least one of its events, and
    whose top retrieved pair's caption does (what the search found: reading can add events only where it beats the
    zero-shot caption)."""
    zero = pct(evaluation.both(evaluation.find("none"), share="any"))
    lines = [f"| method | {' | '.join(kbs)} |", "|---|" + "---:|" * len(kbs), f"| zero-shot | {zero} |"]
    for mode in MODES:
        runs = [evaluation.find(mode, kb, grid_weight, grid_top_k) for kb in kbs]
        cells = [f"{pct(evaluation.both(r, share='any'))} / {pct(evaluation.both(r, 'top_pair', 'any'))}" for r in runs]
        lines.append(f"| {mode} | {' | '.join(cells)} |")
    return "\n".join(lines)


def sweep_table(evaluation: Evaluation, kb: str, key: str, values: list, fixed: dict) -> str:
    header = "W" if key == "weight" else "top-k"
    lines = [f"| {header} | CIDEr-D | both events named |", "|---:|---:|---:|"]
    for value in values:
        run = evaluation.find("generative_pair2pair", kb, **{**fixed, key: value})
        lines.append(f"| {value} | {num(evaluation.cider(run))} | {pct(evaluation.both(run))} |")
    return "\n".join(lines)


def probe_table(probes: dict) -> str:
    lines = [
        "| representation | held-out single clips: class (chance 2 %) | test mixtures: both events by top 2 "
        "(chance 0.08 %) | test mixtures: at least one |",
        "|---|---:|---:|---:|",
    ]
    for name, label in (
        ("clap_audio_embedding", "trained CLAP audio embedding"),
        ("log_mel_statistics", "log-mel mean, deviation, maximum per mel bin (nothing learnt)"),
        ("log_mel_statistics_frequency_sorted", "the same, each sorted over the mel bins (frequency position lost)"),
    ):
        scores = probes.get(name, {})
        lines.append(
            f"| {label} | {pct(scores.get('held_out_clip_accuracy'))} | "
            f"{pct(scores.get('test_mixtures_both_events'))} | {pct(scores.get('test_mixtures_any_event'))} |"
        )
    return "\n".join(lines)


def audio_retrieval_table(retrieval: dict, tower: dict | None = None) -> str:
    """Audio->audio R@k of the held-out single clips (`clap/probes.json`, `audio_to_audio_retrieval`): searching the
    training clips, and leave-one-out among themselves; with `tower` (`clap_audio/retrieval.json`), also the audio
    tower pretrained on the teacher, before the CLAP stage."""
    lines = [
        "| embedding | R@1 vs training clips | R@5 vs training clips | R@1, own recording excluded | R@5, own "
        "recording excluded | R@1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    spaces = dict(retrieval) | {f"tower_{name}": scores for name, scores in (tower or {}).items()}
    for name, label in (
        ("clap_audio_embedding", "trained CLAP audio embedding (the KBs' retrieval space)"),
        ("tower_pooled", "its audio tower pretrained on the teacher, before the CLAP stage (`clap_audio`): pooled"),
        ("tower_predicted_teacher_embedding", "the same tower's prediction of the teacher's embedding"),
        ("teacher", "AudioSet teacher (EfficientAT mn04_as, `--teacher`)"),
        ("log_mel_statistics", "log-mel mean and deviation per mel bin (nothing learnt)"),
    ):
        if name in spaces:
            scores = spaces[name]
            lines.append(
                f"| {label} | {pct(scores.get('R@1_against_training_clips'))} | "
                f"{pct(scores.get('R@5_against_training_clips'))} | {pct(scores['R@1_own_recording_excluded'])} | "
                f"{pct(scores['R@5_own_recording_excluded'])} | {pct(scores['R@1'])} |"
            )
    return "\n".join(lines)


CAPTIONER_LABELS = {
    "stage1": "stage 1",
    "stage2_phase1": "stage 2 phase 1",
    "stage2_phase2": "curriculum (phase 2)",
    "raft_only": "RAFT only",
}
CHANCE_BOTH_EVENTS = 1 / 1225  # two of the 50 classes guessed: 1 / C(50, 2)


def zero_shot_table(scores: dict) -> str:
    """The `zero_shot` stage: each captioner on the larger test sample, with the interval of its both-events share."""
    lines = [
        "| model | both events | 95 % interval | x chance | at least one | CIDEr-D | distinct captions |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in CAPTIONER_LABELS.items():
        if name in scores:
            mixtures = scores[name]["test_mixtures"]
            named = round(mixtures["both"] * mixtures["count"])
            low, high = wilson_interval(named, mixtures["count"])
            lines.append(
                f"| {label} | {pct(mixtures['both'])} ({named} of {mixtures['count']}) | {pct(low)} to {pct(high)} | "
                f"{mixtures['both'] / CHANCE_BOTH_EVENTS:.0f} | {pct(mixtures['any'])} | "
                f"{num(scores[name]['cider_d'])} | {scores[name]['distinct_captions']} |"
            )
    return "\n".join(lines)


def share_cell(scores: dict) -> str:
    """`named of count`: the share and its 95 % Wilson interval."""
    if not scores["count"]:
        return "n/a"
    share = scores["named"] / scores["count"]
    low, high = wilson_interval(scores["named"], scores["count"])
    return f"{pct(share)} ({scores['named']} of {scores['count']}; {pct(low)} to {pct(high)})"


def novel_table(novel: dict) -> str:
    """The `novel` stage: per setting, the share of held-out clips of novel and of known classes whose caption names
    the clip's class, with 95 % Wilson intervals."""
    lines = ["| setting | novel classes: class named | known classes: class named |", "|---|---:|---:|"]
    for row in novel["settings"]:
        lines.append(f"| {row['label']} | {share_cell(row['novel'])} | {share_cell(row['known'])} |")
    return "\n".join(lines)


def novel_section(run: MiniRun, novel: dict | None) -> str:
    if novel is None:
        return ""
    classes = ", ".join(novel["novel_classes"])
    return f"""
## Novel events through the knowledge base (RECAP's claim)

{len(novel["novel_classes"])} classes ({classes}) are in no captioner's training or validation pairs, but in the CLAP
stand-in's training, the LM's text and every KB (`corpus/novel_classes.json` says how they were chosen). The
curriculum model captions the held-out single clips of those classes and as many of known classes; a cell is the
share whose caption names the clip's class (`EVENT_KEYWORDS`), with its 95 % Wilson interval. Every row captions the
same clips (per-clip records in `novel/results.json`, for paired comparisons); top-k {novel["top_k"]}. The control KB
is the refined KB less every pair whose audio holds or caption names a novel class; the text-only KB holds the
distinct training captions without audio.

{novel_table(novel)}
{variant_novel_section(run)}
### Where the novel words vanish (word probe)

Each model captions the same clips zero-shot and with one *same-class example* in its prompt: a training clip of the
query's class (another recording) with a phrase of that class, what a perfect KB would retrieve
(`novel/words/<model>/novel_words.json`, `context_ablations/<name>/novel/words/`). Named: captions naming the clip's
class. Log-prob: the mean log-probability per token the model gives that phrase as the query's caption (teacher
forced). The assembled release holds the `lm` stand-in as trained on caption text; stage 1 trains only the projector.

{words_table(word_probes(run))}
"""


def variant_results(run: MiniRun) -> dict[str, dict]:
    """The novel-events results of the curriculum model and of each `context_ablations` variant, by column name."""
    results = {"curriculum": load_json(run.path("novel", "results.json"))}
    for variant in VARIANTS:
        results[variant.name] = load_json(run.path("context_ablations", variant.name, "novel", "results.json"))
    return {name: result for name, result in results.items() if result is not None}


def variant_novel_section(run: MiniRun) -> str:
    """Novel events per training variant: the headline settings with intervals, then every setting's counts."""
    results = variant_results(run)
    if len(results) < 2:
        return ""
    headline = ["zero-shot", "audio2audio, refined KB", "generative pair2pair W 0.5, refined KB"]
    headline.append("control: audio2audio, refined KB less the novel classes")
    lines = ["| model | " + " | ".join(f"novel: {label}" for label in headline) + " | known: audio2audio |"]
    lines.append("|---|" + "---:|" * (len(headline) + 1))
    for name, result in results.items():
        rows = {row["label"]: row for row in result["settings"]}
        cells = [share_cell(rows[label]["novel"]) for label in headline]
        lines.append(f"| {name} | {' | '.join(cells)} | {share_cell(rows[headline[1]]['known'])} |")
    counts = ["| setting (novel classes named) | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]
    for index, row in enumerate(next(iter(results.values()))["settings"]):
        cells = [result["settings"][index]["novel"] for result in results.values()]
        counts.append(f"| {row['label']} | " + " | ".join(f"{c['named']} of {c['count']}" for c in cells) + " |")
    labels = "; ".join(f"{variant.name}: {variant.label}" for variant in VARIANTS if variant.name in results)
    return f"""
### Novel events by training variant

The curriculum model against phase 2 (or both phases) trained again with settings changed
(`context_ablations/<name>/novel/results.json`; {labels}). The same clips in every cell.

{chr(10).join(lines)}

{chr(10).join(counts)}
"""


def word_probes(run: MiniRun) -> dict[str, Path]:
    """The word probes of RESULTS.md, by row label: the assembled release, every captioner, then each variant's (its
    phase 1 first when it trains one)."""
    labels = {"assembled": "assembled (the `lm` stand-in)", **CAPTIONER_LABELS}
    probes = {label: run.path("novel", "words", name, WORDS_FILE) for name, label in labels.items()}
    for variant in VARIANTS:
        folder = run.path("context_ablations", variant.name, "novel", "words")
        if variant.phase1 is not None:
            probes[f"{variant.name}: phase 1"] = folder / "phase1" / WORDS_FILE
        probes[variant.name] = folder / WORDS_FILE
    return probes


def mechanism_probes(run: MiniRun) -> dict[str, Path]:
    """The context probes of RESULTS.md, by row label: every captioner's, then each phase-2 variant's."""
    probes = {label: run.path("mechanism", name, "context_probe.json") for name, label in CAPTIONER_LABELS.items()}
    for variant in VARIANTS:
        folder = run.path("context_ablations", variant.name, "mechanism")
        probes[f"phase 2, {variant.label}"] = folder / "context_probe.json"
    return probes


ZERO_SHOT, P2P = "zero-shot", claims.run_name()
FIELD_ROWS = (  # RESULTS.md's rows of the `rescoring` and `progressive` stages: (label, evaluation folder, run name)
    ("curriculum, zero-shot", claims.RESCORING, ZERO_SHOT),
    ("curriculum, zero-shot, CLAP rescoring", claims.RESCORING, claims.rescored_name(ZERO_SHOT)),
    ("curriculum, zero-shot, beam search alone", claims.RESCORING, claims.rescored_name(ZERO_SHOT, weight=0.0)),
    ("curriculum, generative pair-to-pair", claims.RESCORING, P2P),
    ("curriculum, generative pair-to-pair, CLAP rescoring", claims.RESCORING, claims.rescored_name(P2P)),
    (
        "curriculum, generative pair-to-pair, CLAP rescoring of both passes",
        claims.RESCORING,
        claims.rescored_name(P2P, query=True),
    ),
    (
        "curriculum, generative pair-to-pair, beam search alone",
        claims.RESCORING,
        claims.rescored_name(P2P, weight=0.0),
    ),
    ("progressive schedule, zero-shot", PROGRESSIVE, ZERO_SHOT),
    ("progressive schedule, generative pair-to-pair", PROGRESSIVE, P2P),
)


def field_table(run: MiniRun) -> str | None:
    """The `rescoring` and `progressive` stages' runs: CIDEr-D, both events named and CLAP score (None where neither
    stage ran)."""
    values = claims.run_values(run.output)
    evaluations = {folder: Evaluation(run.path("evaluation", folder)) for folder in (claims.RESCORING, PROGRESSIVE)}
    lines = []
    for label, folder, name in FIELD_ROWS:
        evaluation = evaluations[folder]
        result = evaluation.runs.get(name.format(**values))
        if result is not None:
            lines.append(
                f"| {label} | {num(evaluation.cider(result))} | {pct(evaluation.both(result))} | "
                f"{num(result['metrics'].get('clap_score'))} |"
            )
    if not lines:
        return None
    return "\n".join(["| setting | CIDEr-D | both events named | CLAP score |", "|---|---:|---:|---:|", *lines])


def field_section(run: MiniRun) -> str:
    """What the field added since the paper (the `rescoring` and `progressive` stages): each setting's scores, and the
    paired comparisons of `claims.FIELD_COMPARISONS` on this run's items ("" where neither stage ran)."""
    table = field_table(run)
    if table is None:
        return ""
    paired = claims.compare([run.output], comparisons=claims.FIELD_COMPARISONS)
    return f"""
## What the field added since the paper: CLAP rescoring and the progressive schedule

CLAP rescoring (SLAM-AAC's CLAP-Refine, `rescoring` stage): the curriculum model's captions chosen among the
beam-search candidates by 0.5 x CLAP audio-text similarity + 0.5 x length-normalised LM log-probability; "beam search
alone" is weight 0 (the beam's own best), the control that tells the CLAP's share from the beam's; "both passes" also
rescores the zero-shot caption that generative pair-to-pair retrieves with. The rows without rescoring are the
`evaluate` stage's (greedy decoding). The progressive schedule (MQ-Cap, `progressive` stage): phase 2 trained again
from the same phase-1 model with the same steps, data and seed, epoch e drawing 1..m_e retrieved pairs per sample
with m = {list(run.scale.progressive_schedule)} (`conf/train/progressive.yaml`) instead of 1..{run.scale.max_examples}
in every epoch (a share 1/{run.scale.max_examples + 1} zero-shot in both). CLAP score: the mean cosine of each
caption's CLAP text embedding with its audio's, in the model's own CLAP, which the rescoring maximises: no independent
judge of it.

{table}

Paired on the same test mixtures (difference of the first setting to the second, CIDEr-D and points of mixtures with
both events named, 95 % paired bootstrap interval; `python -m recipes.mini.local.claims` pools seeds):

{claims.markdown(paired) if paired else "n/a"}"""


def wall_seconds(records: list[dict]) -> float:
    """The time some stage was running: the union of the stages' (started, finished) spans, so stages run side by
    side count once and the pauses between resumed runs not at all (records without spans: their sum)."""
    spans = sorted((r["started"], r["finished"]) for r in records if "started" in r)
    total = sum(r["seconds"] for r in records if "started" not in r)
    end = -math.inf
    for start, finish in spans:
        total += max(0.0, finish - max(start, end))
        end = max(end, finish)
    return total


def fit_table(fit: dict) -> str:
    """The `fit` stage: each captioner, zero-shot, on its own training clips and mixtures."""
    lines = [
        "| model | training clips: event named | training mixtures: both events | at least one | distinct captions |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in CAPTIONER_LABELS.items():
        if name in fit:
            clips, mixtures = fit[name]["train_clips"], fit[name]["train_mixtures"]
            lines.append(
                f"| {label} | {pct(clips['both'])} of {clips['count']} | {pct(mixtures['both'])} of "
                f"{mixtures['count']} | {pct(mixtures['any'])} | {fit[name]['distinct_captions']} |"
            )
    return "\n".join(lines)


def claim(name: str, better: float | None, worse: float | None, what: str) -> str:
    if better is None or worse is None:
        return f"- **{name}**: not measured ({what})."
    verdict = "reproduces" if better > worse else "does not reproduce"
    return f"- **{name}** {verdict} at this scale: {what} ({better:.3f} vs {worse:.3f} CIDEr-D)."


def copy_plots(evaluation: Path, destination: Path) -> dict[str, str]:
    """The sweep plots `paircap evaluate` drew, copied beside RESULTS.md; returns their Markdown image links."""
    links = {}
    for sweep in ("weight", "top_k"):
        plot = evaluation / f"{sweep}_sweep.png"
        if plot.is_file():
            shutil.copyfile(plot, destination / plot.name)
            links[sweep] = f"\n![{sweep} sweep]({plot.name})\n"
    return links


def write_results(run: MiniRun) -> Path:
    """Write `<output>/RESULTS.md` from the stage records and evaluation folders of a run; returns its path."""
    out = run.output
    scale = run.scale
    kbs = ["refined", "large", "base"]
    records = {name: load_json(run.stage_record(name)) for name in run.stages}
    stage_seconds = {name: (record or {}).get("seconds") for name, record in records.items()}
    corpus = load_json(out / "corpus" / "summary.json") or {}
    clap = load_json(out / "clap" / "retrieval.json") or {}
    probes = load_json(out / "clap" / "probes.json") or {}
    fit = load_json(out / "evaluation" / "fit.json") or {}
    zero_shot = load_json(out / "evaluation" / "zero_shot.json") or {}
    novel = load_json(out / "novel" / "results.json")
    main = Evaluation(out / "evaluation" / CURRICULUM)
    raft_only = Evaluation(out / "evaluation" / "raft_only")
    stage1 = Evaluation(out / "evaluation" / "stage1")
    w, k = 0.5, scale.max_examples
    fixed_w, fixed_k = {"top_k": k}, {"weight": w}

    def gen(evaluation: Evaluation, kb: str = "refined"):
        return evaluation.find("generative_pair2pair", kb, w, k)

    timing = "\n".join(
        f"| {name} | {'n/a' if seconds is None else f'{seconds:.0f}'} |" for name, seconds in stage_seconds.items()
    )
    total = wall_seconds([record for record in records.values() if record])
    busy = sum(seconds for seconds in stage_seconds.values() if seconds)
    ablation_rows = []
    for label, evaluation in (("stage 1 only", stage1), ("RAFT only (no curriculum)", raft_only), ("curriculum", main)):
        zero, retrieval = evaluation.find("none"), gen(evaluation)
        ablation_rows.append(
            f"| {label} | {num(evaluation.cider(zero))} | {pct(evaluation.both(zero))} | "
            f"{pct(evaluation.both(zero, share='any'))} | "
            f"{num(evaluation.cider(retrieval))} | {pct(evaluation.both(retrieval))} |"
        )
    zero = main.find("none")
    others = [main.cider(main.find(mode, "refined", w, k)) for mode in ("audio2audio", "audio2mixture")]
    best_other = max((value for value in others if value is not None), default=None)
    claim_lines = [
        claim(
            "Retrieval helps",
            main.cider(gen(main)),
            main.cider(zero),
            "generative pair-to-pair on refined vs zero-shot",
        ),
        claim(
            "Generative pair-to-pair beats audio-to-audio and audio-to-mixture",
            main.cider(gen(main)),
            best_other,
            "generative pair-to-pair vs the better of the other two, on refined",
        ),
        claim(
            "Refined beats unrefined",
            main.cider(gen(main, "refined")),
            main.cider(gen(main, "large")),
            "refined vs large",
        ),
        claim(
            "The curriculum helps", main.cider(gen(main)), raft_only.cider(gen(raft_only)), "curriculum vs RAFT only"
        ),
    ]
    clips = " ".join(run.clip_folders)
    plots = copy_plots(out / "evaluation" / CURRICULUM, out)
    text = f"""# Mini recipe: results

Command: `paircap mini --output {out.name} --scale {scale.name} --clips {clips}`
(seed {run.seed}). Machine: {platform.machine()}, {os.cpu_count()} CPU
cores, torch {torch.__version__}, CPU only. Total wall time {total / 60:.1f} min (the stages' own times add up to
{busy / 60:.1f} min: `--jobs` runs independent stages side by side).

Cells are **CIDEr-D / share of test mixtures whose caption names both events** (keyword map per class,
`EVENT_KEYWORDS` in recipes/mini/local/event_captions.py; chance of naming both classes of a mixture by guessing two of
the 50 classes is about 0.08 %). W = {w}, top-k = {k} unless swept. SPICE/SPIDEr need Java and are not computed here.

## Data

{json.dumps(corpus, indent=2) if corpus else "n/a"}
{novel_section(run, novel)}
## Wall time per stage (seconds)

| stage | seconds |
|---|---:|
{timing}

## Stand-ins for the pretrained parts

CLAP (contrastive, {scale.clap_steps} steps) on the {clap.get("test_clips", "n/a")} test mixtures against their
{clap.get("test_captions", "n/a")} captions: audio-to-caption R@1 {pct(clap.get("audio_to_caption_recall@1"))},
R@5 {pct(clap.get("audio_to_caption_recall@5"))}, R@10 {pct(clap.get("audio_to_caption_recall@10"))}.
The two classes whose event phrases are nearest to a mixture's embedding are its two events for
{pct(clap.get("zero_shot_top2_both_events"))} of the test mixtures (CLAP zero-shot classification: what the
audio embedding alone can name).

What a linear classifier fitted on the training clips can read from each representation
(`clap/probes.json`; {probes.get("probe", "n/a")}):

{probe_table(probes)}

Audio->audio retrieval of the {probes.get("audio_to_audio_retrieval", {}).get("clips", "n/a")} held-out single
clips (a clip of the query's class is a hit): searching the
{probes.get("audio_to_audio_retrieval", {}).get("training_clips", "n/a")} training clips, as a query searches the
knowledge bases (other recordings always), in the first two columns; then leave-one-out among themselves (the other
takes of the query's own recording, near duplicates in ESC-50, excluded in the next two columns, whose ceiling is
{pct(probes.get("audio_to_audio_retrieval", {}).get("log_mel_statistics", {}).get("own_recording_excluded_ceiling"))}:
the share of clips whose class has another recording among them; `recipes/mini/local/retrieval_yardstick.py`):

{audio_retrieval_table(probes.get("audio_to_audio_retrieval", {}), load_json(out / "clap_audio" / "retrieval.json"))}

## Method x knowledge base (curriculum model: stage 1, stage 2 phase 1, phase 2)

{grid_table(main, kbs, w, k)}

## Search against reading: an event named by the caption / by the top retrieved pair's caption

The share of test mixtures whose caption names at least one of its two events, and whose top retrieved pair's caption
does (`evaluation/<captioner>/events.json`, `top_pair`). Where the second share is not above zero-shot's, copying
the top pair cannot name more events than the captioner does alone.

{search_table(main, kbs, w, k)}

## Similarity of the retrieved pairs to the query audio (S_A) and to its references (S_T)

{similarity_table(main.results) if main.results["runs"] else "n/a"}

## W sweep (generative pair-to-pair, refined, top-k {k})

{sweep_table(main, "refined", "weight", sorted({*scale.weight_sweep, w}), fixed_w)}
{plots.get("weight", "")}

## Top-k sweep (generative pair-to-pair, refined, W {w})

{sweep_table(main, "refined", "top_k", sorted({*scale.top_k_sweep, k}), fixed_k)}
{plots.get("top_k", "")}

## Training ablation (zero-shot, and generative pair-to-pair on refined)

| model | zero-shot CIDEr-D | zero-shot both | zero-shot any event | pair2pair CIDEr-D | pair2pair both |
|---|---:|---:|---:|---:|---:|
{chr(10).join(ablation_rows)}

## Zero-shot event accuracy on {scale.zero_shot_test_mixtures} test mixtures

Every captioner zero-shot on the test mixtures, the grid's {scale.test_mixtures} and more
(`evaluation/zero_shot.json`). Chance of naming both events: {100 * CHANCE_BOTH_EVENTS:.2f} %.

{zero_shot_table(zero_shot) if zero_shot else "n/a"}

## The captioners on their own training data (zero-shot)

Every training single clip and the first {scale.fit_mixtures} training mixtures, captioned zero-shot
(`evaluation/fit.json`): low shares here mean the captioner underfits, not only that it fails to generalise.

{fit_table(fit) if fit else "n/a"}

## Does each captioner read its prompt? (context probe)

Each held-out single test clip captioned once per condition (`mechanism/<model>/context_probe.json`): zero-shot; its
own audio with a phrase of its class (oracle) or of another class (adversarial); training clips of other classes with
their phrases (control, k examples). Pulled: names an injected class other than its own. 95 % Wilson intervals; the
difference to zero-shot in naming the right class with a paired bootstrap interval and McNemar's exact p. The
curriculum model's phase 2 trains with pair-to-pair neighbours and query dropout (`conf/train/stage2_phase2.yaml`);
each "phase 2, ..." row trains phase 2 (or both phases, where it says so) again with settings changed
(`context_ablations/`, local/context_ablations.py).

{mechanism_table(mechanism_probes(run))}

{field_section(run)}
## The paper's claims, as measured

{chr(10).join(claim_lines)}
"""
    path = out / "RESULTS.md"
    path.write_text(text)
    return path
