"""Caption audio files in batches: folder walking, per-file errors, progress (`caption_output` writes the lines)."""

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from modeling_paircap.retrieval_paircap import PairCapRetriever, search_device
from paircap.threads import threads_for_decoding

# Files a folder walk takes: what soundfile reads, and the audio containers PyAV (ffmpeg) reads for it. A file among
# them that does not decode gets an error line, never a silent skip.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".opus"}
    | {".m4a", ".m4b", ".mp4", ".aac", ".webm", ".mka", ".wma", ".amr", ".ac3", ".caf", ".wv", ".au", ".w64"}
)
MIN_CAPTION_TOKENS = 4  # a retrieved pair's turn markers and shortest caption, beyond its audio tokens


@dataclass
class AudioInputs:
    """What a walk over the command line's inputs found: the items to caption, one output line each (files, and
    entries that look like audio but cannot be inspected: broken links, link loops, unreadable paths, which get an
    error line), and the entries of folders it skipped, with why."""

    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _may_be_audio(path: Path) -> bool:
    """An audio extension, or none at all (a broken link or unreadable entry without one may be a clip or a folder)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS or not path.suffix


def _walk_folder(folder: Path, found: AudioInputs) -> None:
    """Collect `folder`'s audio files recursively (links to files are followed, links to folders are not, as
    `Path.rglob` does), recording every entry it does not take in `found.skipped`."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:  # an unreadable folder is an item: the loader gives its error line
        found.files.append(folder)
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            mode = os.stat(path).st_mode  # follows links
        except OSError as error:
            if _may_be_audio(path):
                found.files.append(path)  # the loader names the problem (broken link, link loop, permission)
            else:
                found.skipped.append((path, f"cannot be inspected ({_stat_reason(error)}) and has no audio extension"))
            continue
        if stat.S_ISDIR(mode):
            if entry.is_symlink():
                found.skipped.append((path, "symbolic link to a folder (not followed)"))
            else:
                _walk_folder(path, found)
        elif path.suffix.lower() in AUDIO_EXTENSIONS:
            found.files.append(path)  # a FIFO, device or socket among them is refused by the loader, with its line
        elif stat.S_ISREG(mode):
            found.skipped.append((path, f"not an audio file extension ({path.suffix or 'none'})"))
        else:
            found.skipped.append((path, "not a regular file, and no audio extension"))


def _stat_reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(error, FileNotFoundError):
        return "broken symbolic link"
    return error.strerror or str(error)


def walk_audio_inputs(inputs: Iterable[str | Path]) -> AudioInputs:
    """
    Expand files and folders (recursively, sorted) into the items to caption, and what the folder walks skipped.
    An input that does not exist at all is an error (FileNotFoundError); one named explicitly that exists but cannot
    be read (broken link, link loop, unreadable, FIFO, ...) is an item, which gets its error line.
    """
    found = AudioInputs()
    for entry in map(Path, inputs):
        try:
            os.lstat(entry)
        except FileNotFoundError:
            raise FileNotFoundError(f"{entry}: no such file or folder") from None
        except NotADirectoryError:
            raise FileNotFoundError(f"{entry}: no such file or folder (a part of the path is a file)") from None
        except OSError:  # e.g. permission denied on a folder of the path: the loader reports it as the item's error
            found.files.append(entry)
            continue
        if entry.is_dir():  # follows a link named on the command line
            _walk_folder(entry, found)
        else:
            found.files.append(entry)
    return found


def find_audio_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into audio file paths; a missing input is an error."""
    return walk_audio_inputs(inputs).files


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on GPU, float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_retriever(
    model, processor, knowledge_base: str | None = None, audio_roots: Mapping[str, str | os.PathLike] | None = None
) -> PairCapRetriever:
    """
    A retriever over `knowledge_base` (default: the release's `config.knowledge_base`; a relative name is found inside
    the release folder too) with `processor`, searching on the model's GPU when it has one, and checked against the
    model's fingerprints: a missing or mismatched knowledge base fails here, before any audio is decoded.
    """
    knowledge_base = knowledge_base or model.config.knowledge_base
    if knowledge_base is None:
        raise ValueError(f"{model.name_or_path}: no knowledge base given and the release names none")
    retriever = PairCapRetriever.from_pretrained(
        model.name_or_path,
        processor,
        knowledge_base=knowledge_base,
        audio_roots=audio_roots,
        device=search_device(model),
    )
    retriever.check_model(model)
    return retriever


def min_prompt_tokens(top_k: int, config) -> int:
    """The fewest prompt tokens `top_k` retrieved pairs and the query take: one window of audio tokens per clip, and
    the shortest caption with its turn markers per pair."""
    return (top_k + 1) * config.audio_tokens_per_window + top_k * MIN_CAPTION_TOKENS


def max_retrieved_pairs(config) -> int:
    """The most retrieved pairs whose `min_prompt_tokens` fit the LM's context (`max_position_embeddings`); negative
    when not even the query's audio fits."""
    per_clip = config.audio_tokens_per_window
    return (config.text_config.max_position_embeddings - per_clip) // (per_clip + MIN_CAPTION_TOKENS)


def audio_duration(path: str | Path | None) -> float:
    """Seconds of an audio file from its header (0 when it cannot be read: the loader reports that file later). Only
    regular files are opened (a FIFO would block)."""
    try:
        if not stat.S_ISREG(os.stat(str(path)).st_mode):
            return 0.0
        return float(sf.info(str(path)).duration)
    except Exception:  # noqa: BLE001 - any unreadable file sorts first and fails in the loader with its own message
        return 0.0


def length_grouped_batches(durations: Sequence[float], batch_size: int) -> list[list[int]]:
    """
    Indices in batches of clips of similar length: clips with the same number of windows make prompts of the same
    length in both passes, so a batch pads (and decodes padding) as little as possible.
    """
    order = sorted(range(len(durations)), key=lambda i: (durations[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def caption_files(
    model,
    processor,
    files: list[Path],
    batch_size: int = 8,
    progress: bool = True,
    in_order: bool = True,
    **generation_kwargs,
) -> Iterator[dict]:
    """
    Yield one record per file, in input order: `{"file", "caption"}` (plus `zero_shot_caption` and `retrieved` pairs
    when retrieval runs), or `{"file", "error"}` for a file that could not be read (corrupt, empty, silent, not
    audio); the other files of its batch are captioned as usual. Batches group files of similar length; audio of the
    next batch is decoded in background threads while the model generates. `in_order=False` yields each batch's
    records as soon as it is done (files of similar length together), so none waits on a longer file's batch.
    """
    batches = length_grouped_batches([audio_duration(path) for path in files], batch_size)
    done: dict[int, dict] = {}
    next_to_yield = 0
    bar = tqdm(total=len(files), unit="file", desc="captioning", disable=not progress)
    with ThreadPoolExecutor(max_workers=2) as pool:

        def load(batch: list[int]):
            return pool.submit(load_batch, processor, [str(files[i]) for i in batch])

        pending = load(batches[0]) if batches else None
        for number, batch in enumerate(batches):
            loaded = pending.result()
            if number + 1 < len(batches):
                pending = load(batches[number + 1])
            good = [(i, wave) for i, wave in zip(batch, loaded, strict=True) if isinstance(wave, np.ndarray)]
            results = caption_waveforms(model, processor, [wave for _, wave in good], **generation_kwargs)
            by_index = dict(zip((i for i, _ in good), results, strict=True))
            for i, wave in zip(batch, loaded, strict=True):
                # a failed item holds the loader's error
                done[i] = (
                    {"file": str(files[i]), **by_index[i]}
                    if i in by_index
                    else {"file": str(files[i]), "error": str(wave)}
                )
            bar.update(len(batch))
            if not in_order:
                yield from (done.pop(i) for i in batch)
            while next_to_yield in done:
                yield done.pop(next_to_yield)
                next_to_yield += 1
    bar.close()


def load_batch(processor, paths: list[str]) -> list:
    """
    `processor.load_audio(paths)`, where a bad file gives its error in its slot. Should the loader raise instead (a
    release whose remote code predates per-item errors for some failure), the files are loaded one by one and any
    exception becomes that file's error, so one file never costs its batch.
    """
    try:
        return processor.load_audio(paths)
    except Exception:  # noqa: BLE001
        loaded = []
        for path in paths:
            try:
                loaded.append(processor.load_audio([path])[0])
            except Exception as error:  # noqa: BLE001
                loaded.append(f"{path}: could not load audio ({type(error).__name__}: {error})")
        return loaded


def caption_waveforms(model, processor, waveforms: list, **generation_kwargs) -> list[dict]:
    """Caption 48 kHz mono waveforms as one batch: `{"caption"}`, plus the retrieval details when retrieval ran and
    the `candidates` (each with its `caption`, combined `score`, `clap_score` and `lm_score`) when rescoring ran."""
    if not waveforms:
        return []
    inputs = processor(audio=waveforms, sampling_rate=processor.sampling_rate).to(model.device)
    if generation_kwargs.get("rescore") is not None:  # decodes and CLAP-tokenizes the candidates
        generation_kwargs["processor"] = processor
    with torch.no_grad(), threads_for_decoding(model, len(waveforms)):
        output = model.generate(**inputs, return_dict_in_generate=True, **generation_kwargs)
    captions = processor.decode_captions(output.sequences, inputs["input_ids"].shape[1])
    records = [{"caption": caption} for caption in captions]
    if getattr(output, "candidates", None) is not None:
        for record, candidates in zip(records, candidate_records(output), strict=True):
            record["candidates"] = candidates
    retrieved = getattr(output, "retrieved_pairs", None)
    if retrieved is not None:
        zero_shot = output.zero_shot_captions or [None] * len(records)
        for record, first_pass, pairs in zip(records, zero_shot, retrieved, strict=True):
            record["zero_shot_caption"] = first_pass
            record["retrieved"] = pairs
    return records


def candidate_records(output) -> list[list[dict]]:
    """Per query, its rescored candidates: `caption`, combined `score`, `clap_score` and `lm_score`."""
    fields = {
        "score": output.candidate_scores,
        "clap_score": output.candidate_clap_scores,
        "lm_score": output.candidate_lm_scores,
    }
    values = {name: scores.float().cpu().tolist() for name, scores in fields.items()}
    return [
        [
            {"caption": caption, **{name: values[name][query][index] for name in fields}}
            for index, caption in enumerate(captions)
        ]
        for query, captions in enumerate(output.candidates)
    ]
