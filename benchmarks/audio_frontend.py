"""
Audio front end: peak memory of long files through the processor, and its time against the libraries alone.

Peak RSS: each file goes through the processor (`processor(audio=[path])`: decode, resample to 48 kHz, the 3 encoder
windows of 10 s, torch log-mels, prompt) in a fresh subprocess, which reports its own peak resident set size (VmHWM:
the whole process, imports included), its RSS just before the call, and the call's own peak (VmHWM after a
`clear_refs` reset). (`getrusage().ru_maxrss` is recorded too but not used: at exec, Linux folds the spawning parent's
high-water RSS into the child's.) The files are synthetic: a 2-hour 8 kHz mono WAV and a 1-hour
48 kHz stereo WAV (16-bit PCM), written to `--work-dir` and deleted afterwards. The issue's goal: at most 1.5 GB for
any file. For reference, the same files decoded whole (`load_audio_file` without a window layout, then
`split_into_windows`) in the same kind of subprocess.

Front-end time, on a 30 s 44.1 kHz clip, against the libraries measured in the same run (interleaved repeats after
warm-up, medians; the ratio is library time / ours):
- resampling to 48 kHz: `audio_arrays_paircap.resample_mono` against `soxr.resample` ("HQ") called directly,
  the library it wraps;
- the whole front end from the WAV file (`processor(audio=[path])`: decode, resample, 3 windows, torch log-mels,
  prompt) against the libraries alone computing the same log-mels: `soundfile.read`, `soxr.resample`, the windows cut
  with numpy, transformers' numpy `ClapFeatureExtractor` as the processor configures it. The two sets of log-mels
  are compared.

    python -m benchmarks.audio_frontend [--size tiny|full] [--work-dir /tmp] [--repeats 7] [--output PATH]

Full (the default here) writes `results/audio_frontend-cpu.json` / `.md`; tiny (3- and 2-minute files, a smoke run)
`results/audio_frontend-cpu-tiny.json`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.processes import proc_status, reset_peak_rss, run_worker, serve, worker_task

RSS_GOAL_BYTES = 1.5e9
LONG_FILES = {  # name: (seconds, sample rate, channels)
    "full": {"2 h 8 kHz mono": (7200, 8000, 1), "1 h 48 kHz stereo": (3600, 48000, 2)},
    "tiny": {"3 min 8 kHz mono": (180, 8000, 1), "2 min 48 kHz stereo": (120, 48000, 2)},
}
CLIP_SECONDS, CLIP_RATE, TARGET_RATE = 30.0, 44100, 48000
SOXR_QUALITY = "HQ"


# ---- helpers --------------------------------------------------------------------------------------------------------


def write_wav(path: Path, seconds: float, sr: int, channels: int) -> Path:
    """A chirp-and-noise 16-bit WAV written a minute at a time (never held whole in memory)."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = 60 * sr
    with sf.SoundFile(path, "w", sr, channels, subtype="PCM_16") as handle:
        for start in range(0, int(seconds * sr), block):
            n = min(block, int(seconds * sr) - start)
            t = (start + np.arange(n)) / sr
            x = (0.2 * np.sin(2 * np.pi * (300 + 100 * np.sin(t / 50)) * t) + 0.01 * rng.standard_normal(n)).astype(
                np.float32
            )
            handle.write(x if channels == 1 else np.stack([x, 0.5 * x], axis=1))
    return path


def load_processor(release: str):
    from modeling_paircap.processing_paircap import PairCapProcessor

    return PairCapProcessor.from_pretrained(release, trust_remote_code=True, feature_backend="torch")


def rss_worker(job: dict) -> dict:
    """In a fresh process: one file through the processor (or decoded whole), with its peak RSS."""
    from modeling_paircap.audio_loading_paircap import load_audio_file
    from modeling_paircap.processing_paircap import split_into_windows

    processor = load_processor(job["release"])
    status = proc_status()
    before, startup_peak = status.get("VmRSS", 0), status.get("VmHWM", 0)  # this process's own peak so far
    reset_peak_rss()  # VmHWM := current RSS
    start = time.perf_counter()
    if job["mode"] == "windowed":
        inputs = processor(audio=[job["path"]])
        windows = int(inputs["audio_window_counts"].sum())
    else:  # the whole file decoded, then windowed (the data flow before windowed decoding)
        waveform = load_audio_file(job["path"], processor.sampling_rate)
        clip_windows, _ = split_into_windows(waveform, processor.window_samples, processor.max_audio_windows)
        processor.extract_features(clip_windows)
        windows = len(clip_windows)
    seconds = time.perf_counter() - start
    call_peak = proc_status().get("VmHWM", 0)
    return {
        "peak_rss_bytes": max(startup_peak, call_peak),
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_bytes": before,
        "call_peak_rss_bytes": call_peak,
        "seconds": seconds,
        "windows": windows,
    }


def memory_worker(job: dict) -> dict:
    """`rss_worker` in a fresh process; a failure (a whole file too large, say) becomes an `error` entry."""
    try:
        return run_worker("benchmarks.audio_frontend", job)
    except RuntimeError as error:
        return {"error": str(error).strip().splitlines()[-1]}


def library_frontend(path: Path, extractor, window_samples: int, max_windows: int) -> np.ndarray:
    """The log-mels of the processor's windows, by the libraries alone: soundfile decode, soxr to 48 kHz, the windows
    cut with numpy (`max_windows` evenly spaced, the last ending with the clip), transformers' numpy extractor."""
    import soundfile as sf
    import soxr

    waveform, rate = sf.read(path, dtype="float32")
    waveform = soxr.resample(waveform, rate, TARGET_RATE, quality=SOXR_QUALITY)
    starts = np.linspace(0, max(0, len(waveform) - window_samples), max_windows).round().astype(int)
    windows = [waveform[start : start + window_samples] for start in starts]
    features = extractor(
        windows, sampling_rate=TARGET_RATE, truncation="rand_trunc", padding="repeatpad", return_tensors="np"
    )
    return features["input_features"]


def interleaved(cases: dict[str, tuple[str, Callable, str, Callable]], repeats: int) -> list[dict]:
    """Each case's two calls (ours, the library's) after a warm-up, interleaved `repeats` times; medians, ratio."""
    rows = []
    for case, (ours_name, ours, library_name, library) in cases.items():
        ours(), library()  # warm-up (allocator, threads, caches)
        ours_s, library_s = [], []
        for _ in range(repeats):
            for fn, into in ((ours, ours_s), (library, library_s)):
                start = time.perf_counter()
                fn()
                into.append(time.perf_counter() - start)
        ours_median, library_median = float(np.median(ours_s)), float(np.median(library_s))
        rows.append({
            "case": case, "ours": ours_name, "library": library_name, "ours_ms": 1e3 * ours_median,
            "library_ms": 1e3 * library_median, "speedup_vs_baseline": library_median / ours_median,
            "ours_raw_s": ours_s, "library_raw_s": library_s,
        })  # fmt: skip
    return rows


def frontend_timings(release: str, work_dir: Path, repeats: int) -> tuple[list[dict], dict]:
    """Ours against the libraries alone on a 30 s 44.1 kHz clip: resampling, and the front end (file -> log-mels)."""
    import soundfile as sf
    import soxr

    from modeling_paircap import audio_arrays_paircap

    processor = load_processor(release)
    path = write_wav(work_dir / "clip_30s_44k.wav", CLIP_SECONDS, CLIP_RATE, 1)
    mono, _ = sf.read(path, dtype="float32")
    window_samples, max_windows = processor.window_samples, processor.max_audio_windows

    def library() -> np.ndarray:
        return library_frontend(path, processor.feature_extractor, window_samples, max_windows)

    cases = {
        "resample only": (
            "paircap resampler",
            lambda: audio_arrays_paircap.resample_mono(mono, CLIP_RATE, TARGET_RATE, "clip"),
            f"soxr.resample ({SOXR_QUALITY})",
            lambda: soxr.resample(mono, CLIP_RATE, TARGET_RATE, quality=SOXR_QUALITY),
        ),
        "front end (file -> log-mels)": (
            "processor (torch log-mels)",
            lambda: processor(audio=[str(path)]),
            "soundfile + soxr + numpy ClapFeatureExtractor",
            library,
        ),
    }
    rows = interleaved(cases, repeats)
    ours_features = processor(audio=[str(path)])["input_features"].numpy()
    library_features = library()
    agreement = {"ours_shape": list(ours_features.shape), "library_shape": list(library_features.shape)}
    if ours_features.shape == library_features.shape:
        agreement["max_abs_diff_db"] = float(np.abs(ours_features - library_features).max())
    path.unlink()
    return rows, agreement


def agreement_note(agreement: dict) -> str:
    """One line on how the processor's log-mels compare with the libraries'."""
    if "max_abs_diff_db" not in agreement:
        return (
            f"The log-mels differ in shape: {agreement['ours_shape']} (ours), {agreement['library_shape']} (libraries)."
        )
    return (
        f"The processor's log-mels ({'x'.join(map(str, agreement['ours_shape']))}) are within "
        f"{agreement['max_abs_diff_db']:.2g} dB of the libraries' (max abs difference)."
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()), help="where the files go")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each front-end case")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/audio_frontend-cpu…)")
    parser.add_argument("--skip-whole", action="store_true", help="do not measure the whole-file reference")


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.common import environment, markdown_table, parse_args, write_results
    from paircap.assembly import assemble_release
    from paircap.tiny import save_tiny_clap, save_tiny_llama

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--size" not in argv:
        argv = ["--size", "full", *argv]  # the long files are the point of this benchmark
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    if args.device != "cpu":
        raise SystemExit("benchmarks.audio_frontend measures the CPU front end: run it with --device cpu")
    output = args.output or args.output_dir / f"audio_frontend-cpu{'-tiny' if args.size == 'tiny' else ''}.json"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="audio_frontend-", dir=args.work_dir))
    env = environment("cpu")
    try:
        import soundfile
        import soxr

        env.update(soxr=soxr.__version__, soundfile=soundfile.__version__, libsndfile=soundfile.__libsndfile_version__)
        release = work / "release"
        assemble_release(str(save_tiny_clap(work / "clap")), str(save_tiny_llama(work / "llama")), release)

        memory = []
        for name, (seconds, sr, channels) in LONG_FILES[args.size].items():
            path = write_wav(work / f"long_{sr}_{channels}.wav", seconds, sr, channels)
            modes = ["windowed"] if args.skip_whole else ["windowed", "whole file (reference)"]
            for mode in modes:
                job = {
                    "release": str(release),
                    "path": str(path),
                    "mode": "windowed" if mode == "windowed" else "whole",
                }
                result = memory_worker(job)
                row = {"file": name, "file_bytes": path.stat().st_size, "decode": mode, **result}
                if "peak_rss_bytes" in result:
                    row["peak_rss_gb"] = result["peak_rss_bytes"] / 1e9
                    row["call_peak_gb"] = result["call_peak_rss_bytes"] / 1e9
                    row["before_gb"] = result["rss_before_bytes"] / 1e9
                    row["call_increase_gb"] = row["call_peak_gb"] - row["before_gb"]
                    if mode == "windowed":
                        row["meets_goal"] = result["peak_rss_bytes"] <= RSS_GOAL_BYTES
                memory.append(row)
            path.unlink()

        timings, agreement = frontend_timings(str(release), work, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    settings = {
        "long_files": {
            name: {"seconds": s, "sampling_rate": sr, "channels": c}
            for name, (s, sr, c) in LONG_FILES[args.size].items()
        },  # fmt: skip
        "format": "WAV PCM_16, synthetic chirp + noise",
        "processor": "tiny release processor, torch log-mel features (what `paircap caption` uses)",
        "windows": "3 x 10 s at 48 kHz",
        "rss": (
            "peak_rss: the fresh subprocess's own peak resident set (max of VmHWM before and after the call: imports "
            "and processor loading included); before: VmRSS just before the call; call_peak: VmHWM after a "
            "clear_refs reset before the call. ru_maxrss (in the JSON) is not used: Linux folds the spawning "
            "parent's high-water RSS into a child's ru_maxrss at exec, so it reports the benchmark process"
        ),
        "rss_goal_bytes": RSS_GOAL_BYTES,
        "clip": {"seconds": CLIP_SECONDS, "from_rate": CLIP_RATE, "to_rate": TARGET_RATE},
        "soxr_quality": SOXR_QUALITY,
        "baselines": {case: row["library"] for case, row in zip(("resample", "front end"), timings, strict=True)},
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
    }
    results = {"memory": memory, "frontend": timings, "agreement": agreement}
    tables = [
        markdown_table(
            "Peak RSS of one long file through the processor (fresh process; goal <= 1.5 GB)",
            memory,
            ["file", "decode", "peak_rss_gb", "before_gb", "call_peak_gb", "call_increase_gb", "seconds", "meets_goal"],
        ),
        markdown_table(
            f"Front end, {CLIP_SECONDS:.0f} s {CLIP_RATE / 1000:g} kHz -> {TARGET_RATE / 1000:g} kHz: ours against the "
            "libraries alone (same run, interleaved medians)",
            timings,
            ["case", "ours", "ours_ms", "library", "library_ms", "speedup_vs_baseline"],
        ),
        agreement_note(agreement),
    ]
    return write_results(args, "audio_frontend", env, settings, results, tables, path=output)


if __name__ == "__main__":
    if (task := worker_task()) is None:
        main()
    else:
        serve(rss_worker, task)
