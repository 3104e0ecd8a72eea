"""A two-event mixture corpus made from ESC-50 clips (AL-mixgen style).

:func:`write_mixtures` writes 10 s mixtures of two clips of different classes, each with several captions naming both
events (:func:`.event_captions.mixture_captions`), the idea of AL-MixGen (Kim et al., "Exploring Train and Test-Time
Augmentations for Audio-Language Learning", arXiv:2210.17143; later called PairMix) of training on mixed audio with
both captions combined, here with real event captions; optionally with wrong events in the captions as a stand-in for
weakly labelled pairs (WavCaps). :func:`mixture_events` gives their true events, to score generated captions against
(:func:`.event_captions.event_accuracy`).

The clips come from :mod:`.esc50`; every mixture keeps the licences of the clips it uses. The datasets have the
columns of the corpus readers (:data:`datasets_scripts.readers.FEATURES`) and a
:class:`~datasets_scripts.readers.ReaderReport` in ``info.description``.

Usage::

    from recipes.mini.local.esc50 import read_esc50_manifests, split_by_source
    from recipes.mini.local.mixtures import write_mixtures

    clips = read_esc50_manifests(["../shared/data/esc50_cc", "../shared/data/esc50_more"])
    splits = split_by_source(clips, seed=0)
    train = write_mixtures(splits["train"], "out/esc50mix", count=1500, split="train")
    noisy = write_mixtures(splits["train"], "out/esc50mix", count=500, split="train", wrong_events=1)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from datasets import Dataset

from datasets_scripts.readers.core import PairColumns, PathLike, ReaderOptions, pairs_dataset
from modeling_paircap.file_io_paircap import write_atomic
from recipes.mini.local.esc50 import EVENT_PHRASES, Esc50Clip, seed_sequence
from recipes.mini.local.event_captions import ORDER_GAP_S, OVERLAP_S, mixture_captions

__all__ = ["mixture_events", "write_mixtures"]

_PEAK = 0.9
_JSONL = "mixtures.jsonl"
_INT_SUBTYPES = {"PCM_16", "PCM_S8", "PCM_U8"}
# fields that define a mixture without decoding audio; a stored record must agree on all of them
_PLAN_KEYS = (
    "split",
    "index",
    "seed",
    "wrong_events",
    "events",
    "captioned_events",
    "sources",
    "sample_rate",
    "duration",
    "offset_samples",
    "crop_samples",
    "relative_gain_db",
    "captions",
)


class _ClipCache:
    """Decodes each source clip at most once per call (int16 when the file is 16-bit) and knows its level."""

    def __init__(self, sample_rate: int | None):
        self.sample_rate = sample_rate
        self._info: dict[str, tuple[int, int]] = {}
        self._audio: dict[str, np.ndarray] = {}
        self._level: dict[str, float] = {}

    def native(self, path: str) -> tuple[int, int]:
        """(frames, rate) from the header."""
        if path not in self._info:
            info = sf.info(path)
            self._info[path] = (int(info.frames), int(info.samplerate))
        return self._info[path]

    def rate(self, clips: Sequence[Esc50Clip]) -> int:
        if self.sample_rate is not None:
            return int(self.sample_rate)
        rates = sorted({self.native(c.path)[1] for c in clips})
        if len(rates) != 1:
            raise ValueError(f"the clips have different sampling rates {rates}; pass sample_rate=... to resample")
        return rates[0]

    def frames(self, path: str, rate: int) -> int:
        n, native = self.native(path)
        return n if native == rate else int(round(n * rate / native))

    def audio(self, path: str, rate: int) -> np.ndarray:
        """Mono float32 samples at ``rate``."""
        if path not in self._audio:
            info = sf.info(path)
            dtype = "int16" if info.subtype in _INT_SUBTYPES else "float32"
            data, native = sf.read(path, dtype=dtype, always_2d=True)
            if data.shape[1] > 1 or native != rate:
                mono = data.astype(np.float32).mean(axis=1)
                if dtype == "int16":
                    mono /= 32768.0
                if native != rate:
                    import soxr  # only needed when resampling

                    mono = soxr.resample(mono, native, rate).astype(np.float32)
                    want = self.frames(path, rate)
                    mono = np.pad(mono, (0, max(0, want - len(mono))))[:want]
                self._audio[path] = mono
            else:
                self._audio[path] = data[:, 0].copy()
        data = self._audio[path]
        return data.astype(np.float32) / 32768.0 if data.dtype == np.int16 else data

    def level(self, path: str, rate: int) -> float:
        """RMS over the clip's active 100 ms frames (within 40 dB of its loudest), so padding is ignored."""
        if path not in self._level:
            x = self.audio(path, rate).astype(np.float64)
            hop = max(1, rate // 10)
            n = len(x) // hop
            frames = x[: n * hop].reshape(n, hop) if n else x.reshape(1, -1)
            power = (frames**2).mean(axis=1)
            loudest = float(power.max()) if power.size else 0.0
            active = power[power >= loudest * 1e-4] if loudest > 1e-12 else power
            value = float(np.sqrt(active.mean())) if active.size else 0.0
            self._level[path] = value if value > 1e-6 else 1.0  # silent clip: leave as is
        return self._level[path]


def _db(value: float) -> float:
    return 20.0 * math.log10(value)


def _read_records(path: Path, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Records of ``mixtures.jsonl`` by audio_id (the last one wins). A torn line (interrupted run) is
    skipped; with ``repair`` the file is rewritten without it."""
    records: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return records
    bad = False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                records[record["audio_id"]] = record
            except (ValueError, KeyError, TypeError):
                bad = True
    if bad and repair:
        _write_records(path, records.values())
    return records


def _write_records(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
    write_atomic(path, lambda temporary: temporary.write_text(lines, encoding="utf-8"))


def _complete(path: Path, frames: int, rate: int) -> bool:
    try:
        info = sf.info(str(path))
    except Exception:  # unreadable: rewrite it
        return False
    return int(info.frames) == frames and int(info.samplerate) == rate


def write_mixtures(
    clips: Sequence[Esc50Clip],
    output_dir: PathLike,
    count: int,
    split: str,
    seed: int = 0,
    duration: float = 10.0,
    gain_db: tuple[float, float] = (-6.0, 6.0),
    captions_per_mixture: int = 5,
    wrong_events: int = 0,
    *,
    sample_rate: int | None = None,
    num_workers: int | None = None,
) -> Dataset:
    """Write ``count`` mixtures of two clips of different classes and return their caption pairs.

    Mixture ``index`` is drawn from ``(seed, split, index, wrong_events)`` alone: a class pair (uniform
    over the classes present, then a clip of each), a random offset of each clip on a
    ``duration``-second canvas (a longer clip is cropped at a random point) and a gain of the second
    clip relative to the first, uniform in ``gain_db`` dB, after both are brought to the same level
    (RMS over their active frames). The sum is scaled to a peak of 0.9 and written as 16-bit FLAC at
    the clips' rate (or ``sample_rate``, resampling with soxr) to ``output_dir/audio/{audio_id}.flac``
    (``audio_id`` = ``mix-{split}-{index:05d}``, or ``noisy1-...`` / ``noisy2-...`` with ``wrong_events``
    1 / 2, so all three kinds can share one ``output_dir``), with a JSON
    line in ``output_dir/mixtures.jsonl``: audio_id, split, index, seed, events (true classes),
    captioned_events, sources (audio_ids), src_files, licences, offsets (seconds) and offset_samples,
    crop_samples, gains_db (the gain applied to each source in the written file, normalisation
    included: ``audio ~= sum(10**(g/20) * placed source)``), relative_gain_db, peak_scale,
    sample_rate, duration, captions.

    Captions (``captions_per_mixture`` distinct ones, :func:`mixture_captions`) name both events;
    "A, then B" forms appear when A starts :data:`ORDER_GAP_S` seconds or more before B, "A while B"
    forms only when the two overlap. With ``wrong_events`` = 1 or 2, that many of the two events in
    the captions are replaced by random classes not in the mixture (noise pairs standing in for weak
    labels; source ``esc50_mix_noisy``).

    Resumable and deterministic: an existing complete file with a matching record is reused, not
    rewritten (files are written to a temporary name and renamed); a rerun returns an identical
    dataset and a larger ``count`` only adds mixtures. Records that disagree with the current
    arguments raise ``ValueError``.

    Returns:
        Rows ``esc50mix/{split}/{audio_id}/{i}`` in index order, with a :class:`ReaderReport`.
    """
    if wrong_events not in (0, 1, 2):
        raise ValueError(f"wrong_events must be 0, 1 or 2, got {wrong_events!r}")
    if count < 0 or captions_per_mixture < 1 or duration <= 0:
        raise ValueError("count must be >= 0, captions_per_mixture >= 1 and duration > 0")
    low, high = float(gain_db[0]), float(gain_db[1])
    if low > high:
        raise ValueError(f"gain_db must be (low, high), got {gain_db}")
    start_time = time.perf_counter()
    ordered = sorted(clips, key=lambda c: (c.category, c.audio_id))
    by_category: dict[str, list[Esc50Clip]] = defaultdict(list)
    for clip in ordered:
        by_category[clip.category].append(clip)
    categories = sorted(by_category)
    if count and len(categories) < 2:
        raise ValueError(f"mixtures need clips of at least two classes, got {categories}")
    all_categories = sorted(EVENT_PHRASES)

    out = Path(output_dir).expanduser()
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out / _JSONL
    records = _read_records(jsonl, repair=True)
    cache = _ClipCache(sample_rate)
    rate = cache.rate(ordered) if count else int(sample_rate or 48000)
    canvas = int(round(duration * rate))
    gap = int(round(ORDER_GAP_S * rate))
    prefix = f"noisy{wrong_events}" if wrong_events else "mix"
    source = "esc50_mix_noisy" if wrong_events else "esc50_mix"

    def plan(index: int) -> dict[str, Any]:
        rng = np.random.default_rng(seed_sequence(seed, "mix", split, index, wrong_events))
        pair = rng.choice(len(categories), size=2, replace=False)
        chosen = [by_category[categories[k]][int(rng.integers(len(by_category[categories[k]])))] for k in pair]
        offsets, crops, ends = [], [], []
        for clip in chosen:
            n = cache.frames(clip.path, rate)
            room, excess = canvas - min(n, canvas), n - min(n, canvas)
            offsets.append(int(rng.integers(room + 1)))
            crops.append(int(rng.integers(excess + 1)))
            ends.append(offsets[-1] + min(n, canvas))
        relative = float(rng.uniform(low, high)) if high > low else low
        events = [c.category for c in chosen]
        captioned = list(events)
        if wrong_events:
            slots = [0, 1] if wrong_events == 2 else [int(rng.integers(2))]
            others = [c for c in all_categories if c not in events]
            picks = rng.choice(len(others), size=len(slots), replace=False)
            for slot, k in zip(slots, picks, strict=True):
                captioned[slot] = others[int(k)]
        first = 0 if offsets[0] + gap <= offsets[1] else 1 if offsets[1] + gap <= offsets[0] else None
        overlap = min(ends) - max(offsets) >= OVERLAP_S * rate
        captions = mixture_captions(
            captioned[0], captioned[1], captions_per_mixture, rng=rng, first=first, simultaneous=overlap
        )
        return {
            "audio_id": f"{prefix}-{split}-{index:05d}",
            "split": split,
            "index": index,
            "seed": int(seed),
            "wrong_events": int(wrong_events),
            "events": events,
            "captioned_events": captioned,
            "sources": [c.audio_id for c in chosen],
            "src_files": [c.src_file for c in chosen],
            "licences": [c.licence for c in chosen],
            "sample_rate": rate,
            "duration": canvas / rate,
            "offsets": [o / rate for o in offsets],
            "offset_samples": offsets,
            "crop_samples": crops,
            "relative_gain_db": relative,
            "captions": captions,
            "_paths": [c.path for c in chosen],
        }

    def render(spec: dict[str, Any]) -> dict[str, Any]:
        placed = []
        for path, offset, crop in zip(spec["_paths"], spec["offset_samples"], spec["crop_samples"], strict=True):
            x = cache.audio(path, rate)[crop : crop + canvas]
            track = np.zeros(canvas, dtype=np.float32)
            track[offset : offset + len(x)] = x
            placed.append(track)
        levels = [cache.level(p, rate) for p in spec["_paths"]]
        gains = [-_db(levels[0]), -_db(levels[1]) + spec["relative_gain_db"]]
        mix = 10 ** (gains[0] / 20) * placed[0] + 10 ** (gains[1] / 20) * placed[1]
        peak = float(np.max(np.abs(mix)))
        scale = _PEAK / peak if peak > 0 else 1.0
        mix *= scale
        target = audio_dir / f"{spec['audio_id']}.flac"
        write_atomic(target, lambda temporary: sf.write(str(temporary), mix, rate, subtype="PCM_16", format="FLAC"))
        record = {k: v for k, v in spec.items() if not k.startswith("_")}
        record["gains_db"] = [g + _db(scale) for g in gains]
        record["peak_scale"] = scale
        return record

    specs = [plan(i) for i in range(count)]
    todo: list[dict[str, Any]] = []
    for spec in specs:
        old = records.get(spec["audio_id"])
        if old is not None:
            differs = [k for k in _PLAN_KEYS if old.get(k) != spec[k]]
            if differs:
                raise ValueError(
                    f"{jsonl}: mixture {spec['audio_id']} was written with other settings or clips (differs in "
                    f"{differs}); use another output_dir or remove it"
                )
            if _complete(audio_dir / f"{spec['audio_id']}.flac", canvas, rate):
                continue
        todo.append(spec)
    if todo:
        workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        for spec in todo:  # decode sources once, before threads share the cache
            for path in spec["_paths"]:
                cache.level(path, rate)
        with open(jsonl, "a", encoding="utf-8") as handle, ThreadPoolExecutor(max_workers=workers) as pool:
            for record in pool.map(render, todo):
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
                records[record["audio_id"]] = record

    rows = PairColumns()
    for spec in specs:
        audio_id = spec["audio_id"]
        path = os.path.abspath(audio_dir / f"{audio_id}.flac")
        for i, caption in enumerate(spec["captions"]):
            rows.add(f"esc50mix/{split}/{audio_id}/{i}", audio_id, path, caption, source, split, canvas / rate)
    report = ReaderOptions(max_duration=None).new_report(source, split, out)
    report.rows_read = report.rows_kept = len(rows)
    report.clips_kept = len(specs)
    report.seconds = round(time.perf_counter() - start_time, 4)
    return pairs_dataset([rows.table()], report)


def mixture_events(output_dir: PathLike) -> dict[str, tuple[str, str]]:
    """True events of every mixture in ``output_dir/mixtures.jsonl``, by audio_id."""
    path = Path(output_dir).expanduser() / _JSONL
    if not path.is_file():
        raise FileNotFoundError(f"no mixture metadata at {path}")
    return {aid: (r["events"][0], r["events"][1]) for aid, r in _read_records(path).items()}


def mixture_sources(output_dir: PathLike) -> dict[str, list[str]]:
    """The component clips (``sources``, ESC-50 audio ids) of every mixture in ``output_dir/mixtures.jsonl``, by
    audio_id."""
    path = Path(output_dir).expanduser() / _JSONL
    if not path.is_file():
        raise FileNotFoundError(f"no mixture metadata at {path}")
    return {aid: list(r["sources"]) for aid, r in _read_records(path).items()}
