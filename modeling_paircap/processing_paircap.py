"""Processor for PairCap: audio loading and windowing, CLAP features, prompts (`prompting_paircap`), tokenization,
decoding."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .audio_arrays_paircap import AudioInputError
from .audio_loading_paircap import load_audio_batch
from .audio_windows_paircap import WindowedWaveform, window_starts
from .feature_extraction_paircap import extract_clap_features
from .prompting_paircap import CaptionSpan, PromptFormat, caption_labels, fill_placeholders


def split_into_windows(waveform: np.ndarray, window_samples: int, max_windows: int) -> tuple[list[np.ndarray], bool]:
    """
    Cut a clip into at most `max_windows` windows of `window_samples`, evenly spaced from its start to its end (the last
    window ends with the clip, so no window is a short fragment). Returns the windows and whether the clip was longer
    than `max_windows` windows (it then gets the length token).
    """
    if len(waveform) <= window_samples:
        return [waveform], False
    starts, is_long = window_starts(len(waveform), window_samples, max_windows)
    return [waveform[start : start + window_samples] for start in starts], is_long


def is_precomputed_segment(segment: Any) -> bool:
    """A segment given as pooled encoder tokens (e.g. a knowledge-base row) instead of audio."""
    return isinstance(segment, dict) and "audio_tokens" in segment


class PairCapProcessor(ProcessorMixin):
    r"""
    Builds PairCap inputs. Audio (file paths, arrays with their `sampling_rate`, or `datasets` audio dicts) is loaded,
    mono-mixed, resampled to 48 kHz, cut into 10 s windows and turned into CLAP log-mel features (`rand_trunc`, which
    never crops a window, so features are deterministic). Prompts follow the Vicuna v1.1 chat format (configurable via
    `prompt_template`); every `<audio>` placeholder is expanded to the number of pooled tokens of its segment.

    Args:
        feature_extractor (`ClapFeatureExtractor`): CLAP log-mel features.
        tokenizer (`PreTrainedTokenizerBase`): the language model tokenizer, holding `<audio>` and the length token.
        clap_tokenizer (`PreTrainedTokenizerBase`): the CLAP text tower's tokenizer, for retrieval text embeddings.
        prompt_template (`dict`, *optional*): `system`, `user_role`, `assistant_role` and `instruction` strings.
        audio_token (`str`): the placeholder token. long_audio_token (`str`): the length token (paper §3.1).
        audio_tokens_per_window (`int`): pooled tokens per window (`config.audio_tokens_per_window`).
        window_seconds (`float`), max_audio_windows (`int`): windowing, as in the model config.
        clap_max_length (`int`): CLAP text truncation length (77, as LAION-CLAP).
        feature_backend (`str`): `numpy` (transformers' `ClapFeatureExtractor`) or `torch` (the same features from
            `TorchClapFeatures`, within 0.02 dB, 2-2.7x less CPU on one to three windows).
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        clap_tokenizer=None,
        prompt_template: dict[str, str] | None = None,
        audio_token: str = "<audio>",
        long_audio_token: str = "<long_audio>",
        audio_tokens_per_window: int = 32,
        window_seconds: float = 10.0,
        max_audio_windows: int = 3,
        clap_max_length: int = 77,
        feature_backend: str = "numpy",
        **kwargs,
    ):
        self.prompt_template = PromptFormat.from_template(prompt_template).as_template()
        self.audio_token = audio_token
        self.long_audio_token = long_audio_token
        self.audio_tokens_per_window = audio_tokens_per_window
        self.window_seconds = window_seconds
        self.max_audio_windows = max_audio_windows
        self.clap_max_length = clap_max_length
        if feature_backend not in ("numpy", "torch"):
            raise ValueError(f"feature_backend must be 'numpy' or 'torch', got {feature_backend!r}")
        self.feature_backend = feature_backend
        super().__init__(feature_extractor, tokenizer, clap_tokenizer, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`ProcessorMixin.save_pretrained`, writing the remote code too (this file and those it imports, named in
        `processor_config.json`'s `auto_map`) however the processor was loaded, as a release needs it."""
        type(self).register_for_auto_class("AutoProcessor")
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    # ---- prompts -------------------------------------------------------------------------------------------------

    @property
    def prompt_format(self) -> PromptFormat:
        """The prompt format of `prompt_template`."""
        return PromptFormat.from_template(self.prompt_template)

    def build_prompt(
        self, captions: Sequence[str | None], placeholders: Sequence[str] | None = None
    ) -> tuple[str, list[CaptionSpan]]:
        """
        One conversation with a turn per audio segment, `USER: <audio>\n{instruction} ASSISTANT:`, each followed by
        its caption and the end-of-sequence token unless the caption is None (the query to caption). `placeholders`
        replace `<audio>` turn by turn (the processor passes the expanded token runs). Returns the text and the
        character spans of the captions with their end tokens: the positions the loss covers (paper eq. 1).
        """
        placeholders = [self.audio_token] * len(captions) if placeholders is None else placeholders
        return self.prompt_format.build(placeholders, captions, self.tokenizer.eos_token)

    def truncate_caption(self, caption: str, max_tokens: int) -> str:
        """
        `caption` unchanged when its cleaned text (what a prompt holds) takes at most `max_tokens` LM tokens; else that
        text cut on a token boundary to the longest prefix that takes at most `max_tokens` tokens on its own.
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        cleaned = self.prompt_format.clean_caption(caption)
        encoding = self.tokenizer(cleaned, add_special_tokens=False, return_offsets_mapping=True)
        ends = [end for _, end in encoding["offset_mapping"]]
        if len(ends) <= max_tokens:
            return caption
        for kept in range(max_tokens, 0, -1):  # a cut word may re-tokenize into more pieces: step back until it fits
            cut = cleaned[: ends[kept - 1]].rstrip()
            if len(self.tokenizer(cut, add_special_tokens=False)["input_ids"]) <= max_tokens:
                return cut
        return ""

    # ---- audio ----------------------------------------------------------------------------------------------------

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sampling_rate))

    def load_audio(self, audio: Sequence[Any], sampling_rate: int | Sequence[int | None] | None = None) -> list:
        """
        Load every item to mono float32 at 48 kHz; a bad item gives its `AudioInputError` in its slot. A file (or
        encoded bytes) longer than `max_audio_windows` windows is decoded only where its windows lie (a
        `WindowedWaveform`, which `window_audio` and this processor take as they are).
        """
        return load_audio_batch(
            list(audio),
            target_sr=self.sampling_rate,
            sampling_rate=sampling_rate,
            window_samples=self.window_samples,
            max_windows=self.max_audio_windows,
        )

    def window_audio(self, waveform: np.ndarray) -> tuple[list[np.ndarray], bool]:
        """Split a 48 kHz waveform into encoder windows; see `split_into_windows`."""
        if isinstance(waveform, WindowedWaveform) and waveform.has_layout:
            starts, is_long = window_starts(waveform.num_samples, self.window_samples, self.max_audio_windows)
            if list(waveform.window_starts) != starts or waveform.window_samples != self.window_samples:
                raise ValueError("this windowed waveform was decoded for another window layout; load the file again")
            return waveform.windows(), is_long
        return split_into_windows(waveform, self.window_samples, self.max_audio_windows)

    def extract_features(self, windows: list[np.ndarray]) -> np.ndarray:
        """CLAP log-mel features `(num_windows, 1, frames, mels)`; windows never exceed 10 s, so no random crop."""
        if self.feature_backend == "torch":
            return extract_clap_features(windows, self.feature_extractor).numpy()
        features = self.feature_extractor(
            windows, sampling_rate=self.sampling_rate, truncation="rand_trunc", padding="repeatpad", return_tensors="np"
        )
        return features["input_features"]

    def expand_placeholder(self, num_tokens: int, is_long: bool) -> str:
        """The text that replaces one `<audio>` placeholder."""
        return (self.long_audio_token if is_long else "") + self.audio_token * num_tokens

    # ---- main entry -----------------------------------------------------------------------------------------------

    def __call__(
        self,
        audio: Any = None,
        text: str | list[str] | None = None,
        examples: Sequence[Sequence[Any]] | None = None,
        captions: Sequence[str] | None = None,
        sampling_rate: int | Sequence[int | None] | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""
        Build model inputs for a batch of query clips.

        Args:
            audio: one clip or a list of clips (paths, arrays, `datasets` audio dicts, or pooled-token dicts
                `{"audio_tokens": (n, hidden)}` such as knowledge-base rows). With `text`, the clips fill the
                prompts' `<audio>` placeholders in order.
            text: prompts with `<audio>` placeholders; by default the chat template is built for each query.
            examples: per query, the (segment, caption) pairs interleaved before it (retrieved pairs); a segment is
                any clip form above, and a dict with `caption` and `audio_tokens` or `audio` works as a whole pair.
            captions: target captions of the queries: adds `labels` covering every caption in each sequence.
            sampling_rate: the rate of array inputs (one for all, or one per clip).
            padding_side: `"left"` for generation (default), `"right"` when `captions` are given.
        """
        if audio is None:
            raise ValueError("PairCapProcessor needs audio")
        audio = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        if text is not None and (examples is not None or captions is not None):
            raise ValueError("Pass either text prompts or examples/captions, not both")
        texts = None if text is None else [text] if isinstance(text, str) else list(text)
        if texts is not None:
            segments_per_prompt, turn_captions = self._assign_segments(texts, audio), None
        else:
            segments_per_prompt, turn_captions = self._template_turns(audio, examples, captions)
        segments = [segment for prompt_segments in segments_per_prompt for segment in prompt_segments]
        audio_inputs, expansions, sizes = self._prepare_segments(segments, self._rates_for(segments, sampling_rate))

        segment_counts = [len(prompt_segments) for prompt_segments in segments_per_prompt]
        prompts, spans = self._prompt_texts(texts, turn_captions, split_sizes(expansions, segment_counts))
        side = padding_side or ("right" if captions is not None else "left")
        encoding = self.tokenizer(
            prompts, padding=True, padding_side=side, return_offsets_mapping=captions is not None, return_tensors="np"
        )
        data = {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"], **audio_inputs}
        if captions is not None:
            data["labels"] = caption_labels(encoding, spans)
        if "audio_tokens" in audio_inputs:
            flags = [[is_precomputed_segment(segment) for segment in segments] for segments in segments_per_prompt]
            sizes_per_prompt = split_sizes(sizes, segment_counts)
            data["audio_tokens_mask"] = self._precomputed_mask(data["input_ids"], sizes_per_prompt, flags)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _template_turns(self, audio, examples, captions) -> tuple[list[list], list[list[str | None]]]:
        """Per query: its examples' segments then the query, and the turn captions (None for the query to caption)."""
        if examples is not None and len(examples) != len(audio):
            raise ValueError(f"examples has {len(examples)} entries for {len(audio)} queries")
        if captions is not None and len(captions) != len(audio):
            raise ValueError(f"captions has {len(captions)} entries for {len(audio)} queries")
        segments_per_prompt, turn_captions = [], []
        for i, query in enumerate(audio):
            pairs = [as_pair(pair, f"examples[{i}][{j}]") for j, pair in enumerate(examples[i] if examples else [])]
            segments_per_prompt.append([segment for segment, _ in pairs] + [query])
            turn_captions.append([caption for _, caption in pairs] + [None if captions is None else captions[i]])
        return segments_per_prompt, turn_captions

    def _prompt_texts(
        self, texts: list[str] | None, turn_captions: list[list[str | None]] | None, expansions: list[list[str]]
    ) -> tuple[list[str], list[list[CaptionSpan]]]:
        """Each prompt with its placeholders expanded, and its caption spans: the user's texts (no captions), or the
        prompt format's turns."""
        if texts is not None:
            prompts = [
                fill_placeholders(text, self.audio_token, text_expansions)
                for text, text_expansions in zip(texts, expansions, strict=True)
            ]
            return prompts, [[] for _ in prompts]
        built = [self.build_prompt(*turns) for turns in zip(turn_captions, expansions, strict=True)]
        return [prompt for prompt, _ in built], [prompt_spans for _, prompt_spans in built]

    def _assign_segments(self, texts: list[str], audio: list) -> list[list]:
        """Distribute the flat clip list over the prompts' `<audio>` placeholders, checking the counts."""
        counts = [prompt.count(self.audio_token) for prompt in texts]
        if sum(counts) != len(audio):
            detail = ", ".join(f"text[{i}]: {c}" for i, c in enumerate(counts))
            raise ValueError(
                f"The prompts hold {sum(counts)} {self.audio_token} placeholders ({detail}) for {len(audio)} clips"
            )
        return split_sizes(audio, counts)

    @staticmethod
    def _rates_for(segments: list, sampling_rate) -> list[int | None]:
        """Per-segment sampling rates: one rate for all segments, or one per segment in prompt order."""
        if sampling_rate is None or isinstance(sampling_rate, int):
            return [sampling_rate] * len(segments)
        rates = list(sampling_rate)
        if len(rates) != len(segments):
            raise ValueError(f"sampling_rate lists {len(rates)} rates for {len(segments)} audio segments")
        return rates

    def _prepare_segments(self, segments: list, rates: list) -> tuple[dict[str, np.ndarray], list[str], list[int]]:
        """Load and featurise waveform segments, collect pre-computed tokens, and build each placeholder expansion."""
        waveform_slots = [i for i, segment in enumerate(segments) if not is_precomputed_segment(segment)]
        loaded = self.load_audio([segments[i] for i in waveform_slots], [rates[i] for i in waveform_slots])
        failures = [item for item in loaded if isinstance(item, AudioInputError)]
        if failures:
            raise AudioInputError(
                ", ".join(failure.item for failure in failures),
                "; ".join(str(failure) for failure in failures),
            )
        waveforms = dict(zip(waveform_slots, loaded, strict=True))
        expansions, sizes, windows, window_counts, precomputed = [], [], [], [], []
        for i, segment in enumerate(segments):
            if i in waveforms:
                clip_windows, is_long = self.window_audio(waveforms[i])
                windows.extend(clip_windows)
                window_counts.append(len(clip_windows))
                sizes.append(len(clip_windows) * self.audio_tokens_per_window)
                expansions.append(self.expand_placeholder(sizes[-1], is_long))
            else:
                tokens = segment["audio_tokens"]  # a tensor stays where it is (e.g. KB tokens kept on the GPU)
                tokens = tokens if isinstance(tokens, torch.Tensor) else np.asarray(tokens, dtype=np.float32)
                if tokens.ndim != 2:  # zero tokens is a caption-only (text-only knowledge base) example
                    raise ValueError(f"audio segment {i}: audio_tokens must be a (tokens, hidden) array")
                precomputed.append(tokens)
                sizes.append(len(tokens))
                expansions.append(self.expand_placeholder(len(tokens), bool(segment.get("is_long", False))))
        audio_inputs = {}
        if windows:
            audio_inputs["input_features"] = self.extract_features(windows)
            audio_inputs["audio_window_counts"] = np.asarray(window_counts, dtype=np.int64)
        if precomputed:
            audio_inputs["audio_tokens"] = concatenate_tokens(precomputed)
        return audio_inputs, expansions, sizes

    def _precomputed_mask(
        self, input_ids: np.ndarray, sizes: list[list[int]], precomputed: list[list[bool]]
    ) -> np.ndarray:
        """Mark the `<audio>` positions of pre-computed segments, walking each prompt's placeholders in order."""
        audio_id = self.tokenizer.convert_tokens_to_ids(self.audio_token)
        mask = np.zeros(input_ids.shape, dtype=bool)
        for row, (row_sizes, row_flags) in enumerate(zip(sizes, precomputed, strict=True)):
            positions = np.flatnonzero(input_ids[row] == audio_id)
            if sum(row_sizes) != len(positions):
                raise ValueError(f"text[{row}]: {len(positions)} audio placeholders for {sum(row_sizes)} audio tokens")
            bounds = np.cumsum([0, *row_sizes])
            for start, end, flag in zip(bounds[:-1], bounds[1:], row_flags, strict=True):
                mask[row, positions[start:end]] = flag
        return mask

    # ---- text side ------------------------------------------------------------------------------------------------

    def clap_text_inputs(self, texts: Sequence[str], return_tensors: str = "pt") -> BatchFeature:
        """Tokenize captions for the CLAP text tower (retrieval text embeddings)."""
        encoding = self.clap_tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.clap_max_length, return_tensors=return_tensors
        )
        return BatchFeature(
            data={"clap_input_ids": encoding["input_ids"], "clap_attention_mask": encoding["attention_mask"]}
        )

    def decode_captions(self, sequences: torch.Tensor | np.ndarray, prompt_length: int = 0) -> list[str]:
        """Decode generated ids (dropping the first `prompt_length` positions, the prompt) into clean captions."""
        sequences = sequences[:, prompt_length:]
        prompt_format = self.prompt_format
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return [prompt_format.clean_caption(text) for text in texts]

    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "input_features",
            "audio_window_counts",
            "audio_tokens",
            "audio_tokens_mask",
        ]


def split_sizes(values: Sequence, sizes: Sequence[int]) -> list:
    """Cut a flat sequence into consecutive pieces of the given sizes."""
    bounds = np.cumsum([0, *sizes])
    return [values[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def concatenate_tokens(parts: list) -> np.ndarray | torch.Tensor:
    """Join segments' pooled tokens; with any tensor among them, a float32 tensor on that tensor's device."""
    tensors = [part for part in parts if isinstance(part, torch.Tensor)]
    if not tensors:
        return np.concatenate(parts)
    device = tensors[0].device
    return torch.cat([torch.as_tensor(part, device=device).float() for part in parts])


def as_pair(pair: Any, name: str) -> tuple[Any, str]:
    """An interleaved example as (segment, caption): a 2-tuple, or a dict with `caption` and its audio or tokens."""
    if isinstance(pair, dict) and "caption" in pair:
        if "audio_tokens" in pair:
            return {"audio_tokens": pair["audio_tokens"], "is_long": pair.get("is_long", False)}, pair["caption"]
        if "audio" in pair:
            return pair["audio"], pair["caption"]
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], str):
        return pair[0], pair[1]
    raise ValueError(f"{name}: an example must be (audio, caption) or a dict with caption and audio or audio_tokens")


__all__ = ["PairCapProcessor", "split_into_windows"]
