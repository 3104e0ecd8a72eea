"""Tests for the mini recipe's ESC-50 reader, event captions and mixtures (recipes/mini/local/esc50.py,
event_captions.py, mixtures.py): the ESC-50 vocabulary, manifests, source-level split, single-clip pairs and the
two-event mixture corpus.

The vocabulary tests always run. The others use the real ESC-50 clips in ``../shared/data/esc50_cc`` and
``../shared/data/esc50_more`` (read in place; mixtures are written under ``tmp_path``) and skip when those
folders are absent.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import SHARED_DATA

from datasets_scripts.readers import FEATURES, ReaderReport
from recipes.mini.local.corpus import clip_groups
from recipes.mini.local.esc50 import (
    DEFAULT_LICENCE,
    EVENT_PHRASES,
    Esc50Clip,
    _allocate,
    read_esc50_manifests,
    single_clip_pairs,
    split_by_source,
)
from recipes.mini.local.event_captions import (
    EVENT_EXCLUSIONS,
    EVENT_KEYWORDS,
    ORDER_GAP_S,
    event_accuracy,
    events_named,
    mixture_captions,
    named_events,
    names_event,
)
from recipes.mini.local.mixtures import mixture_events, mixture_sources, write_mixtures

SHARED = SHARED_DATA
ESC_CC = SHARED / "esc50_cc"
ESC_MORE = SHARED / "esc50_more"
ROOTS = [ESC_CC, ESC_MORE]

needs_esc50 = pytest.mark.skipif(
    not all((root / "manifest.csv").is_file() for root in ROOTS),
    reason=f"real ESC-50 clips not found at {ESC_CC} and {ESC_MORE}; they are not part of the repo",
)

SEQUENTIAL_MARKERS = (", then ", " and then ", " before ", "and after that", "first ")


# ----------------------------------------------------------------------------------- vocabulary


def test_vocabulary_shape():
    assert len(EVENT_PHRASES) == 50
    assert set(EVENT_KEYWORDS) == set(EVENT_PHRASES)
    assert set(EVENT_EXCLUSIONS) <= set(EVENT_PHRASES)
    for category, phrases in EVENT_PHRASES.items():
        assert 3 <= len(phrases) <= 4, category
        assert len(set(phrases)) == len(phrases), category
        for phrase in phrases:
            assert phrase == phrase.strip().lower() and not phrase.endswith("."), phrase
        for keyword in EVENT_KEYWORDS[category]:
            assert keyword == keyword.lower() and keyword.strip(), (category, keyword)


def test_every_phrasing_names_its_class_and_no_other():
    for category, phrases in EVENT_PHRASES.items():
        for phrase in phrases:
            assert names_event(phrase, category), (category, phrase)
            assert named_events(phrase) == {category}, (category, phrase, named_events(phrase))


def test_keyword_rules():
    assert names_event("A dog is BARKING.", "dog") and names_event("puppies yelp", "dog")
    assert named_events("a crowd cheers") == set()  # "crow" is a whole word
    assert named_events("pigeons coo") == set()  # "pig" too
    assert named_events("the season changes") == set() and names_event("by the sea", "sea_waves")
    assert named_events("a window rattles") == set() and names_event("the wind howls", "wind")
    assert named_events("Cock-a-doodle-doo!") == {"rooster"}
    # uses of another class's word that must not name it
    assert named_events("a rooster crows") == {"rooster"}
    assert named_events("a rooster crows while a crow caws") == {"rooster", "crow"}
    assert named_events("rain is pouring down") == {"rain"}
    assert named_events("pouring rain and water pours into a cup") == {"rain", "pouring_water"}
    assert named_events("a chain saw cuts") == {"chainsaw"}
    assert named_events("a cowbell clanks") == set()
    assert named_events("a cow bellows") == {"cow"}
    assert named_events("a clap of thunder") == {"thunderstorm"}
    assert named_events("a hornet buzzes") == {"insects"}
    assert named_events("a fire alarm goes off") == {"clock_alarm"}
    assert named_events("fireworks explode") == {"fireworks"}
    with pytest.raises(KeyError):
        names_event("a dog barks", "unicorn")


def test_mixture_captions_name_exactly_both_events():
    categories = sorted(EVENT_PHRASES)
    for k, (a, b) in enumerate(itertools.permutations(categories, 2)):
        first = (None, 0, 1)[k % 3]
        captions = mixture_captions(a, b, 5, rng=k, first=first, simultaneous=bool(k % 2))
        assert len(set(captions)) == 5
        for caption in captions:
            assert caption[0].isupper() and not caption.endswith("."), caption
            assert named_events(caption) == {a, b}, (a, b, caption, named_events(caption))


def test_mixture_captions_order_and_determinism():
    def clause_position(caption: str, category: str) -> int:
        text = caption.lower()
        return min(text.find(p) for p in EVENT_PHRASES[category] if p in text)

    for seed in range(20):
        unordered = mixture_captions("dog", "rain", 8, rng=seed, first=None)
        assert not any(m in c.lower() for c in unordered for m in SEQUENTIAL_MARKERS), unordered
        for first in (0, 1):
            captions = mixture_captions("dog", "rain", 8, rng=seed, first=first)
            ordered = [c for c in captions if any(m in c.lower() for m in SEQUENTIAL_MARKERS)]
            assert ordered, captions
            early, late = ("dog", "rain") if first == 0 else ("rain", "dog")
            for caption in ordered:
                assert clause_position(caption, early) < clause_position(caption, late), caption
        apart = mixture_captions("dog", "rain", 8, rng=seed, simultaneous=False)
        assert not any(" while " in c or " as " in c or "same time" in c for c in apart), apart
    assert mixture_captions("cat", "wind", 5, rng=3) == mixture_captions("cat", "wind", 5, rng=3)
    assert mixture_captions("cat", "wind", 5, rng=3) != mixture_captions("cat", "wind", 5, rng=4)
    with pytest.raises(ValueError):
        mixture_captions("cat", "cat")


def test_allocate_rules():
    fractions = {"train": 0.6, "validation": 0.1, "test": 0.3}
    assert _allocate(1, fractions) == {"train": 1, "validation": 0, "test": 0}
    assert _allocate(2, fractions) == {"train": 1, "validation": 0, "test": 1}
    for n in range(3, 30):
        counts = _allocate(n, fractions)
        assert sum(counts.values()) == n and counts["train"] >= 1 and counts["test"] >= 1
        for name, share in fractions.items():
            assert abs(counts[name] - share * n) <= 1.0, (n, counts)


def test_events_named_per_event():
    assert events_named("A dog barks while it rains", ("dog", "rain", "siren")) == [True, True, False]
    assert events_named("A rooster crows", ("rooster", "crow")) == [True, False]  # a rooster crowing is not a crow
    assert events_named("anything", ()) == []
    with pytest.raises(KeyError, match="unicorn"):
        events_named("a dog barks", ("dog", "unicorn"))


def test_event_accuracy_hand_made():
    events = {"m1": ("dog", "rain"), "m2": ("cat", "siren"), "m3": ("rooster", "crow"), "m4": ("clock_tick", "wind")}
    captions = {
        "m1": "A dog barks while it rains",  # both
        "m2": "A cat meows",  # one
        "m3": "A rooster crows",  # one: a rooster crowing is not a crow
        "m4": "Someone speaks",  # none
    }
    assert event_accuracy(captions, events) == {"both": 0.25, "any": 0.75, "count": 4}
    assert event_accuracy({"m1": "a dog barks"}, events) == {"both": 0.0, "any": 1.0, "count": 1}
    empty = event_accuracy({}, events)
    assert empty["count"] == 0 and np.isnan(empty["both"])
    with pytest.raises(KeyError):
        event_accuracy({"zz": "a dog barks"}, events)


# ------------------------------------------------------------------------------------ real clips


@pytest.fixture(scope="module")
def clips() -> list[Esc50Clip]:
    return read_esc50_manifests(ROOTS)


@pytest.fixture(scope="module")
def few_clips(clips) -> list[Esc50Clip]:
    """Two clips of each of six classes (mixtures of real audio, kept small so the tests are fast)."""
    chosen = ("dog", "rain", "rooster", "crow", "clock_tick", "pouring_water")
    by_id = sorted(clips, key=lambda clip: clip.audio_id)
    return [clip for category in chosen for clip in [c for c in by_id if c.category == category][:2]]


@needs_esc50
def test_read_manifests(clips):
    cc = [c for c in clips if c.path.startswith(str(ESC_CC))]
    more = [c for c in clips if c.path.startswith(str(ESC_MORE))]
    assert (len(cc), len(more)) == (99, 221)
    assert {c.category for c in clips} == set(EVENT_PHRASES)
    assert len({c.audio_id for c in clips}) == 320
    for clip in clips:
        assert os.path.isabs(clip.path) and os.path.isfile(clip.path)
        assert Path(clip.path).stem == clip.audio_id and clip.path.endswith(".flac")
        assert clip.audio_id.split("-")[1:3] == [clip.src_file, clip.take]
        assert clip.target == int(clip.audio_id.split("-")[3]) and clip.fold == int(clip.audio_id[0])
    assert {c.licence for c in cc} <= {"CC0", "CC-BY"} and {c.licence for c in more} == {DEFAULT_LICENCE}


def test_read_manifests_errors(tmp_path):
    header = "filename,fold,target,category,esc10,src_file,take\n"
    (tmp_path / "bad_cat").mkdir()
    (tmp_path / "bad_cat" / "manifest.csv").write_text(header + "1-1-A-0.wav,1,0,unicorn,False,1,A\n")
    with pytest.raises(ValueError, match=r"manifest\.csv, line 2: unknown ESC-50 category 'unicorn'"):
        read_esc50_manifests(tmp_path / "bad_cat")
    (tmp_path / "no_audio").mkdir()
    (tmp_path / "no_audio" / "manifest.csv").write_text(header + "1-1-A-0.wav,1,0,dog,True,1,A\n")
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv, line 2: no audio file for '1-1-A-0.wav'"):
        read_esc50_manifests([tmp_path / "no_audio"])
    with pytest.raises(FileNotFoundError, match="no ESC-50 manifest"):
        read_esc50_manifests(tmp_path / "absent")


@needs_esc50
def test_split_by_source(clips):
    splits = split_by_source(clips, seed=0)
    assert set(splits) == {"train", "validation", "test"}
    assert sum(len(v) for v in splits.values()) == len(clips)
    sources = {name: {c.src_file for c in members} for name, members in splits.items()}
    for a, b in itertools.combinations(sources, 2):
        assert not sources[a] & sources[b], (a, b)
    assert {c.category for c in splits["train"]} == set(EVENT_PHRASES)
    per_category = {}
    for clip in clips:
        per_category.setdefault(clip.category, set()).add(clip.src_file)
    in_test = {c.category for c in splits["test"]}
    assert {cat for cat, srcs in per_category.items() if len(srcs) >= 2} <= in_test
    assert splits["validation"]  # classes with enough recordings give some
    assert split_by_source(clips, seed=0) == splits
    assert split_by_source(list(reversed(clips)), seed=0) == splits  # input order does not matter
    assert split_by_source(clips, seed=1) != splits


@needs_esc50
def test_single_clip_pairs(clips):
    chosen = [c for c in clips if c.category in ("dog", "rooster")]
    ds = single_clip_pairs(chosen, "train")
    assert ds.features == FEATURES
    assert len(ds) == sum(len(EVENT_PHRASES[c.category]) for c in chosen)
    first = sorted(chosen, key=lambda c: c.audio_id)[0]
    row = ds[0]
    assert row["pair_id"] == f"esc50/train/{first.audio_id}/0" and row["audio_id"] == first.audio_id
    assert row["audio"] == {"path": first.path, "bytes": None}
    assert row["caption"] == EVENT_PHRASES[first.category][0] and row["source"] == "esc50"
    assert row["split"] == "train" and row["duration"] == pytest.approx(5.0)
    report = ReaderReport.from_dataset(ds)
    assert report.corpus == "esc50" and report.rows_kept == len(ds) and report.clips_kept == len(chosen)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((folder / "audio").glob("*.flac"))}


def _records(folder: Path) -> dict[str, dict]:
    lines = (folder / "mixtures.jsonl").read_text().splitlines()
    return {r["audio_id"]: r for r in map(json.loads, lines)}


@needs_esc50
def test_write_mixtures_audio_and_captions(few_clips, tmp_path):
    out = tmp_path / "mix"
    ds = write_mixtures(few_clips, out, count=6, split="train", seed=0)
    assert ds.features == FEATURES and len(ds) == 6 * 5
    by_id = {c.audio_id: c for c in few_clips}
    records = _records(out)
    assert sorted(records) == [f"mix-train-{i:05d}" for i in range(6)]
    for record in records.values():
        path = out / "audio" / f"{record['audio_id']}.flac"
        info = sf.info(str(path))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (48000, 480000, 1, "PCM_16")
        audio, _ = sf.read(str(path), dtype="float64")
        peak = np.abs(audio).max()
        assert peak < 0.95 and peak == pytest.approx(0.9, abs=1e-3)  # normalised, far from clipping

        a, b = record["events"]
        assert a != b and [by_id[s].category for s in record["sources"]] == [a, b]
        assert record["captioned_events"] == [a, b]
        assert record["licences"] == [by_id[s].licence for s in record["sources"]]
        assert record["offsets"] == [o / 48000 for o in record["offset_samples"]]
        # the file is the sum of the two placed sources at the recorded gains (up to 16-bit rounding)
        expected = np.zeros(480000)
        for source, offset, crop, gain in zip(
            record["sources"], record["offset_samples"], record["crop_samples"], record["gains_db"], strict=True
        ):
            x, rate = sf.read(by_id[source].path, dtype="float64")
            assert rate == 48000 and 0 <= offset <= 480000 - len(x) and crop == 0
            expected[offset : offset + len(x)] += 10 ** (gain / 20) * x
        assert np.abs(audio - expected).max() < 2e-4
        scale = float(audio @ expected / (expected @ expected))
        assert scale == pytest.approx(1.0, abs=1e-3)

        captions = record["captions"]
        assert len(set(captions)) == 5
        for caption in captions:
            assert named_events(caption) == {a, b}, caption
        starts = record["offsets"]
        if abs(starts[0] - starts[1]) < ORDER_GAP_S:
            assert not any(m in c.lower() for c in captions for m in SEQUENTIAL_MARKERS), captions

    rows = ds.to_list()
    assert rows[0]["pair_id"] == "esc50mix/train/mix-train-00000/0"
    for row in rows:
        aid, i = row["audio_id"], int(row["pair_id"].rsplit("/", 1)[1])
        assert row["pair_id"] == f"esc50mix/train/{aid}/{i}" and row["caption"] == records[aid]["captions"][i]
        assert row["audio"] == {"path": str((out / "audio" / f"{aid}.flac").resolve()), "bytes": None}
        assert (row["source"], row["split"], row["duration"]) == ("esc50_mix", "train", 10.0)
    report = ReaderReport.from_dataset(ds)
    assert (report.corpus, report.rows_kept, report.clips_kept) == ("esc50_mix", 30, 6)
    assert mixture_events(out) == {aid: tuple(r["events"]) for aid, r in records.items()}
    assert not list((out / "audio").glob(".*"))  # no temporary files left


@needs_esc50
def test_write_mixtures_resume_and_extend(few_clips, tmp_path):
    out = tmp_path / "mix"
    first = write_mixtures(few_clips, out, count=4, split="validation", seed=3)
    stamps = _mtimes(out)
    again = write_mixtures(few_clips, out, count=4, split="validation", seed=3)
    assert again.to_list() == first.to_list()
    assert _mtimes(out) == stamps  # nothing rewritten

    more = write_mixtures(few_clips, out, count=7, split="validation", seed=3)
    assert more.to_list()[: len(first)] == first.to_list()
    after = _mtimes(out)
    assert {k: after[k] for k in stamps} == stamps and len(after) == 7
    assert len((out / "mixtures.jsonl").read_text().splitlines()) == 7

    # a fresh folder gives the same mixtures (deterministic by seed/split/index), another seed others
    fresh = write_mixtures(few_clips, tmp_path / "fresh", count=4, split="validation", seed=3)
    assert fresh.to_list()[0]["caption"] == first.to_list()[0]["caption"]
    assert sf.read(tmp_path / "fresh" / "audio" / "mix-validation-00000.flac")[0].tolist() == (
        sf.read(out / "audio" / "mix-validation-00000.flac")[0].tolist()
    )
    # other settings in the same folder are refused, not mixed in
    with pytest.raises(ValueError, match="other settings"):
        write_mixtures(few_clips, out, count=2, split="validation", seed=4)
    # a torn last line (interrupted run) is dropped and that mixture made again
    with open(out / "mixtures.jsonl", "a") as handle:
        handle.write('{"audio_id": "mix-validation-0')
    assert write_mixtures(few_clips, out, count=7, split="validation", seed=3).to_list() == more.to_list()
    assert len(_records(out)) == 7


@needs_esc50
def test_write_mixtures_wrong_events(few_clips, tmp_path):
    out = tmp_path / "mix"
    clean = write_mixtures(few_clips, out, count=3, split="train")
    noisy = write_mixtures(few_clips, out, count=5, split="train", wrong_events=1)
    records = _records(out)
    assert len(records) == 8 and len(clean) == 15  # both kinds share the folder
    assert {r["source"] for r in noisy.to_list()} == {"esc50_mix_noisy"}
    for i in range(5):
        record = records[f"noisy1-train-{i:05d}"]
        true, told = record["events"], record["captioned_events"]
        assert sum(t != c for t, c in zip(true, told, strict=True)) == 1
        wrong = next(c for c in told if c not in true)
        for caption in record["captions"]:
            named = named_events(caption)
            assert len(named & set(true)) == 1 and wrong in named, caption
    both = write_mixtures(few_clips, out, count=2, split="train", wrong_events=2)
    for aid in sorted({r["audio_id"] for r in both.to_list()}):
        record = _records(out)[aid]
        assert aid.startswith("noisy2-") and not set(record["captioned_events"]) & set(record["events"])
        for caption in record["captions"]:
            assert not named_events(caption) & set(record["events"])
    events = mixture_events(out)
    assert events["noisy1-train-00000"] == tuple(records["noisy1-train-00000"]["events"])
    sources = mixture_sources(out)
    assert sources["noisy1-train-00000"] == records["noisy1-train-00000"]["sources"] and len(sources) == 10
    groups = clip_groups(out, [clean, noisy])  # the corpus's clip_groups.json: the mixtures of these sets only
    assert groups == {aid: sources[aid] for aid in {*clean["audio_id"], *noisy["audio_id"]}}
    assert all(
        len(clips) == 2 and all(clip in {c.audio_id for c in few_clips} for clip in clips) for clips in groups.values()
    )
    noisy_captions = {r["audio_id"]: r["caption"] for r in noisy.to_list()}
    assert event_accuracy(noisy_captions, events)["both"] == 0.0
    assert event_accuracy(noisy_captions, events)["any"] == 1.0
    with pytest.raises(ValueError):
        write_mixtures(few_clips, out, count=1, split="train", wrong_events=3)
