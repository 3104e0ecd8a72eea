"""
Audio front end: peak memory of long files through the processor, and soxr against the old hand-written resampler.

Peak RSS: each file goes through the processor (`processor(audio=[path])`: decode, resample to 48 kHz, the 3 encoder
windows of 10 s, torch log-mels, prompt) in a fresh subprocess, which reports its own peak resident set size (VmHWM:
the whole process, imports included), its RSS just before the call, and the call's own peak (VmHWM after a
`clear_refs` reset). (`getrusage().ru_maxrss` is recorded too but not used: at exec, Linux folds the spawning parent's
high-water RSS into the child's.) The files are synthetic: a 2-hour 8 kHz mono WAV and a 1-hour
48 kHz stereo WAV (16-bit PCM), written to `--work-dir` and deleted afterwards. The issue's goal: at most 1.5 GB for
any file. For reference, the same files decoded whole (`load_audio_file` without a window layout, then
`split_into_windows`: the previous data flow, with today's soxr resampler) in the same kind of subprocess.

Front-end time: a 30 s 44.1 kHz clip resampled to 48 kHz, by soxr ("HQ", `audio_arrays_paircap`) and by the hand-written
Kaiser-windowed sinc polyphase resampler it replaced (kept below as the baseline, verbatim: float64 torch, the path
`audio_io` used), alone and as part of the processor's whole front end from a WAV file (decode, resample, features,
prompt; the baseline is patched in as the resampler). Interleaved repeats after warm-up, medians; the ratio is
baseline time / soxr time.

    python benchmarks/audio_frontend.py [--size tiny|full] [--work-dir /tmp] [--repeats 7] [--output PATH]

Full (the default here) writes `results/audio_frontend-cpu.json` / `.md`; tiny (3- and 2-minute files, a smoke run)
`results/audio_frontend-cpu-tiny.json`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python benchmarks/<name>.py`

import argparse
import functools
import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import time

import numpy as np
import torch

RESULT_PREFIX = "AUDIO_FRONTEND_RESULT "
RSS_GOAL_BYTES = 1.5e9
LONG_FILES = {  # name: (seconds, sample rate, channels)
    "full": {"2 h 8 kHz mono": (7200, 8000, 1), "1 h 48 kHz stereo": (3600, 48000, 2)},
    "tiny": {"3 min 8 kHz mono": (180, 8000, 1), "2 min 48 kHz stereo": (120, 48000, 2)},
}
CLIP_SECONDS, CLIP_RATE, TARGET_RATE = 30.0, 44100, 48000


# ---- the baseline: the hand-written resampler audio_io used before soxr (verbatim) --------------------------------

_LOWPASS_FILTER_WIDTH = 64
_ROLLOFF = 0.9475
_KAISER_BETA = 14.769656459379492
_MAX_KERNEL_ELEMENTS = 1 << 25


@functools.lru_cache(maxsize=16)
def _sinc_kernel_f64(orig: int, new: int) -> tuple[torch.Tensor, int]:
    lpw = _LOWPASS_FILTER_WIDTH
    base_freq = min(orig, new) * _ROLLOFF
    width = math.ceil(lpw * orig / base_freq)
    n_elements = new * (2 * width + orig)
    if n_elements > _MAX_KERNEL_ELEMENTS:
        raise ValueError(f"resampling ratio {orig}:{new} (after gcd reduction) needs a {n_elements}-element kernel")
    idx = torch.arange(-width, width + orig, dtype=torch.float64)
    phase = torch.arange(new, dtype=torch.float64).unsqueeze(1)
    t = (idx / orig - phase / new) * base_freq
    t = t.clamp(-lpw, lpw)
    beta = torch.tensor(_KAISER_BETA, dtype=torch.float64)
    window = torch.i0(beta * torch.sqrt(1.0 - (t / lpw) ** 2)) / torch.i0(beta)
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = (sinc * window * (base_freq / orig)).unsqueeze(1).contiguous()
    return kernel, width


def old_resample(waveform: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """The replaced `audio_io.resample` (torchaudio's "kaiser_best" algorithm), float64 CPU path."""
    if orig_sr == target_sr:
        return waveform
    g = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    kernel, width = _sinc_kernel_f64(orig, new)
    kernel = kernel.to(dtype=waveform.dtype)
    shape = waveform.shape
    length = shape[-1]
    target_length = -(-length * new // orig)
    n_signals = math.prod(shape[:-1])
    x = waveform.reshape(n_signals, 1, length)
    x = torch.nn.functional.pad(x, (width, width + orig))
    if x.dtype == torch.float64:
        frames = x[:, 0].unfold(-1, kernel.shape[-1], orig)
        taps_by_phase = kernel[:, 0].T
        step = max(1, (1 << 22) // (kernel.shape[-1] * n_signals))
        y = torch.cat([frames[:, s : s + step] @ taps_by_phase for s in range(0, frames.shape[1], step)], dim=1)
    else:
        y = torch.nn.functional.conv1d(x, kernel, stride=orig).transpose(1, 2)
    y = y.reshape(x.shape[0], -1)[:, :target_length]
    return y.reshape(*shape[:-1], target_length)


def old_resample_np(mono: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """The replaced `audio_io._resample_np`: through float64 torch, back to float32."""
    return old_resample(torch.from_numpy(mono.astype(np.float64)), orig_sr, target_sr).numpy().astype(np.float32)


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


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_worker(job: dict) -> dict:
    """In a fresh process: one file through the processor (or decoded whole), with its peak RSS."""
    from modeling_paircap.audio_loading_paircap import load_audio_file
    from modeling_paircap.processing_paircap import split_into_windows

    processor = load_processor(job["release"])
    before = _vm_rss()
    startup_peak = _vm_hwm()  # this process's own peak so far (imports, processor)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
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
    call_peak = _vm_hwm()
    return {
        "peak_rss_bytes": max(startup_peak, call_peak),
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_bytes": before,
        "call_peak_rss_bytes": call_peak,
        "seconds": seconds,
        "windows": windows,
    }


def run_worker(job: dict) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if result.returncode != 0 or not lines:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def frontend_timings(release: str, work_dir: Path, repeats: int) -> tuple[list[dict], dict]:
    """soxr vs the old resampler on a 30 s 44.1 kHz clip: alone, and in the processor's whole front end."""
    import soundfile as sf

    from modeling_paircap import audio_arrays_paircap

    processor = load_processor(release)
    path = write_wav(work_dir / "clip_30s_44k.wav", CLIP_SECONDS, CLIP_RATE, 1)
    mono, _ = sf.read(path, dtype="float32")
    ours_np = audio_arrays_paircap.resample_mono(mono, CLIP_RATE, TARGET_RATE, "clip")
    theirs_np = old_resample_np(mono, CLIP_RATE, TARGET_RATE)
    n = min(len(ours_np), len(theirs_np))
    edge = TARGET_RATE // 10
    agreement = float(np.abs(ours_np[:n] - theirs_np[:n])[edge:-edge].max())

    soxr_resampler = audio_arrays_paircap._soxr_resample

    def old_as_soxr(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
        return old_resample_np(x, orig_sr, target_sr)

    def frontend(resampler) -> None:
        audio_arrays_paircap._soxr_resample = resampler
        try:
            processor(audio=[str(path)])
        finally:
            audio_arrays_paircap._soxr_resample = soxr_resampler

    cases = {
        "resample only": (
            lambda: audio_arrays_paircap.resample_mono(mono, CLIP_RATE, TARGET_RATE, "clip"),
            lambda: old_resample_np(mono, CLIP_RATE, TARGET_RATE),
        ),
        "processor front end (file -> features)": (lambda: frontend(soxr_resampler), lambda: frontend(old_as_soxr)),
    }
    rows = []
    for name, (ours, baseline) in cases.items():
        ours(), baseline()  # warm-up (kernel cache, allocator, threads)
        ours_s, base_s = [], []
        for _ in range(repeats):  # interleaved
            for fn, into in ((ours, ours_s), (baseline, base_s)):
                start = time.perf_counter()
                fn()
                into.append(time.perf_counter() - start)
        ours_median, base_median = float(np.median(ours_s)), float(np.median(base_s))
        rows.append({
            "case": name, "soxr_ms": 1e3 * ours_median, "old_resampler_ms": 1e3 * base_median,
            "speedup_vs_baseline": base_median / ours_median, "soxr_raw_s": ours_s, "old_raw_s": base_s,
        })  # fmt: skip
    path.unlink()
    return rows, {"max_abs_diff_soxr_vs_old": agreement, "output_samples": [len(ours_np), len(theirs_np)]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()), help="where the files go")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each front-end case")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/audio_frontend-cpu…)")
    parser.add_argument("--skip-whole", action="store_true", help="do not measure the whole-file reference")


def main(argv: Sequence[str] | None = None) -> dict:
    from benchmarks.common import RESULTS_DIR, environment, markdown_table, parse_args, write_results
    from paircap.assembly import assemble_release
    from paircap.tiny import save_tiny_clap, save_tiny_llama

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--size" not in argv:
        argv = ["--size", "full", *argv]  # the long files are the point of this benchmark
    args = parse_args(__doc__.strip().splitlines()[0], argv, add_arguments)
    if args.device != "cpu":
        raise SystemExit("audio_frontend.py measures the CPU front end: run it with --device cpu")
    output = args.output or (args.output_dir or RESULTS_DIR) / (
        f"audio_frontend-cpu{'-tiny' if args.size == 'tiny' else ''}.json"
    )
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
                result = run_worker(job)
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
        "soxr_quality": "HQ",
        "baseline": "the hand-written Kaiser-windowed sinc polyphase resampler audio_io used before (float64 torch)",
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
            f"Front end, {CLIP_SECONDS:.0f} s {CLIP_RATE / 1000:g} kHz -> {TARGET_RATE / 1000:g} kHz: soxr vs the old "
            "resampler (same run, interleaved medians)",
            timings,
            ["case", "soxr_ms", "old_resampler_ms", "speedup_vs_baseline"],
        ),
        f"soxr and the old resampler agree within {agreement['max_abs_diff_soxr_vs_old']:.2g} (max abs difference, "
        "edges of 0.1 s excluded; the clip is a chirp plus broadband noise, and the two filters' transition bands "
        "differ); output lengths "
        f"{agreement['output_samples'][0]} (soxr: rounded) and {agreement['output_samples'][1]} (old: ceil).",
    ]
    return write_results(args, "audio_frontend", env, settings, results, tables, path=output)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(RESULT_PREFIX + json.dumps(rss_worker(json.loads(sys.argv[2]))), flush=True)
    else:
        main()
