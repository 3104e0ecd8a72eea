"""The PairCap web demo (Gradio): caption a clip and show why, through the (audio, caption) pairs it retrieved.

    paircap demo --model mini            # or: python app.py (a Hugging Face Space as it is)

Caption runs pass 1 (the zero-shot caption), keeps its outputs (the caption, the query's CLAP audio embedding a_q and
the caption's text embedding t_q) in the page's session state, searches the knowledge base and runs pass 2 with the
retrieved pairs. Moving W, top-k or the mode re-ranks from the kept embeddings (one index search, no new pass 1);
Re-caption runs pass 2 alone with the neighbours shown. With `num_candidates` (`paircap demo --num-candidates N`) the
final caption is CLAP-rescored: the best of N beam candidates, listed under the status with their scores. Each
neighbour's audio plays in the page where the demo can reach it: a local file inside the folder given for its root
(`audio_roots`; the KB's absolute paths only under `audio_roots["absolute"]`), through a per-session token
(`paircap/demo_audio.py`), or an audio URL, which the browser fetches; a page URL becomes a link.

The server guards itself: uploads over `MAX_UPLOAD` are refused, uploads are deleted after `CACHE_CLEANUP`, each
request stops at `time_limit` seconds, and an error names the uploaded file, never the server's folders.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import gradio as gr
import numpy as np
import torch
from transformers.utils import logging

from modeling_paircap.audio_locations_paircap import (
    ABSOLUTE_ROOT,
    AudioLocationError,
    clip_audio_location,
    is_absolute,
)
from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.captioning import (
    AUDIO_EXTENSIONS,
    caption_waveforms,
    load_retriever,
    max_retrieved_pairs,
    resolve_device,
    resolve_dtype,
)
from paircap.demo_audio import NEIGHBOUR_ROUTE, NeighbourAudio
from paircap.releases import load_release

logger = logging.get_logger(__name__)

MODES = ("generative_pair2pair", "audio2audio", "audio2mixture", "none")
MAX_TOP_K = 10
HEADERS = ["#", "S", "S_A", "S_T", "caption", "audio", "clip"]
DATATYPES = ["number", "number", "number", "number", "str", "html", "str"]
COLUMN_WIDTHS = ["40px", "72px", "72px", "72px", "34%", "290px", "14%"]
TABLE_LABEL = (
    "Retrieved pairs · S = W·S_A + (1−W)·S_T (generative_pair2pair), S_A (audio2audio), S_A + S_T (audio2mixture)"
)
NOT_AVAILABLE = "audio not available here"
TEXT_ONLY = "text only (no audio)"
MAX_UPLOAD = "50mb"  # 4.5 min of 48 kHz stereo 16-bit WAV; far longer compressed
REQUEST_SECONDS = 300.0  # each caption or re-caption stops here (decoding, pass 1, pass 2)
LOCAL_HOST = "127.0.0.1"
CACHE_CLEANUP = (600, 3600)  # every 10 min, delete uploads older than an hour (and all of them at shutdown)


@dataclass
class FirstPass:
    """What pass 1 leaves for re-ranking and pass 2: the decoded clip, its zero-shot caption, a_q and t_q."""

    waveform: np.ndarray
    zero_shot: str
    audio_embeds: np.ndarray
    text_embeds: np.ndarray


class DemoEngine:
    """The model, processor and retriever (with its knowledge base) behind the demo, with the steps of a caption and a
    count of each pass."""

    def __init__(
        self,
        model,
        processor,
        retriever: PairCapRetriever | None = None,
        max_new_tokens: int = 40,
        time_limit: float = REQUEST_SECONDS,
        num_candidates: int = 0,
        rescore_weight: float = 0.5,
    ):
        self.model = model
        self.processor = processor
        self.retriever = retriever
        self.kb = retriever.knowledge_base if retriever is not None else None
        self.generation = {"max_new_tokens": max_new_tokens, "num_beams": 1, "do_sample": False}
        # the final caption's CLAP rescoring (none with 0 candidates)
        self.rescoring = (
            {"rescore": "clap", "num_candidates": num_candidates, "rescore_weight": rescore_weight}
            if num_candidates
            else {}
        )
        self.time_limit = time_limit
        self.audio = NeighbourAudio(self.kb)
        self.pass_one_runs = 0
        self.pass_two_runs = 0

    @classmethod
    def from_release(
        cls,
        model_id: str,
        knowledge_base: str | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 40,
        time_limit: float = REQUEST_SECONDS,
        trust_remote_code: bool = False,
        num_candidates: int = 0,
        rescore_weight: float = 0.5,
    ) -> DemoEngine:
        """
        Load a release (hub id or folder) and its knowledge base (`knowledge_base`, else the release's own), with the
        installed PairCap classes, or with `trust_remote_code` the release's own code; its clips play from the folders
        `audio_roots` gives (`{"absolute": DIR}` allows its absolute paths under DIR). `num_candidates` > 0: the final
        caption is the best of that many candidates by CLAP rescoring with weight `rescore_weight`.
        """
        torch_device = resolve_device(device)
        dtype = resolve_dtype(dtype, torch_device)
        model, processor = load_release(model_id, torch_device, dtype, "torch", trust_remote_code)
        retriever = None
        if knowledge_base is not None or model.config.knowledge_base is not None:
            retriever = load_retriever(model, processor, knowledge_base, audio_roots=dict(audio_roots or {}))
            warn_unmapped_roots(retriever.knowledge_base)
        return cls(model, processor, retriever, max_new_tokens, time_limit, num_candidates, rescore_weight)

    # ---- settings -----------------------------------------------------------------------------------------------
    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.kb is not None else ("none",)

    @property
    def default_mode(self) -> str:
        configured = self.model.config.retrieval_mode
        return configured if configured in self.modes else self.modes[0]

    @property
    def default_top_k(self) -> int:
        return min(self.model.config.retrieval_top_k, self.max_top_k)

    @property
    def max_top_k(self) -> int:
        """The most pairs whose audio tokens and shortest captions fit the LM's context with the query (at most 10)."""
        return max(0, min(MAX_TOP_K, max_retrieved_pairs(self.model.config)))

    def describe(self) -> str:
        """One line on the release and its knowledge base."""
        name = Path(self.model.name_or_path).name or self.model.name_or_path
        if self.kb is None:
            return f"Release `{name}`, without a knowledge base: zero-shot captions only."
        meta = self.kb.metadata
        sources = ", ".join(f"{source} {count}" for source, count in sorted(meta.sources.items()))
        return (
            f"Release `{name}` · knowledge base of {meta.num_pairs} pairs over {meta.num_clips} clips "
            f"({meta.num_text_only} text-only; {sources or 'sources not recorded'})."
        )

    # ---- the steps of a caption ---------------------------------------------------------------------------------
    def load(self, audio: str | None) -> np.ndarray:
        """The clip as 48 kHz mono; when it cannot be read, the loader's reason naming the file, not its folder."""
        if not audio:
            raise gr.Error("Upload or record a clip first.")
        waveform = self.processor.load_audio([audio])[0]
        if not isinstance(waveform, np.ndarray):
            raise gr.Error(str(waveform).replace(str(Path(audio).parent) + os.sep, ""))
        return waveform

    def deadline(self) -> float:
        """When a request that starts now must stop (`time_limit` seconds on the monotonic clock)."""
        return time.monotonic() + self.time_limit

    def time_left(self, deadline: float | None) -> dict:
        """Generation's `max_time` for what is left before `deadline` (none without one); past it, the request ends."""
        if deadline is None:
            return {}
        left = deadline - time.monotonic()
        if left <= 0:
            raise gr.Error(f"The request ran past its time limit of {self.time_limit:g} s; try a shorter clip.")
        return {"max_time": left}

    @torch.no_grad()
    def first_pass(self, waveform: np.ndarray, deadline: float | None = None) -> FirstPass:
        """Pass 1 (the zero-shot caption), then a_q of the clip and t_q of the caption: everything re-ranking needs."""
        zero_shot = caption_waveforms(
            self.model, self.processor, [waveform], retrieval_mode="none", **self.time_left(deadline),
            **self.generation,
        )  # fmt: skip
        self.time_left(deadline)  # generation cut short by max_time is not a caption
        self.pass_one_runs += 1
        caption = zero_shot[0]["caption"]
        device = self.model.device
        inputs = self.processor(audio=[waveform], sampling_rate=self.processor.sampling_rate).to(device)
        audio_embeds = self.model.encode_audio(inputs["input_features"], inputs["audio_window_counts"]).audio_embeds
        text_embeds = self.model.embed_texts(**self.processor.clap_text_inputs([caption]).to(device))
        return FirstPass(waveform, caption, as_numpy(audio_embeds), as_numpy(text_embeds))

    def neighbours(self, first: FirstPass, mode: str, weight: float, top_k: int) -> list[dict]:
        """The top-k pairs for the kept pass-1 embeddings: one index search, no model pass."""
        if self.kb is None or mode == "none" or top_k == 0:
            return []
        hits = self.kb.search(
            first.audio_embeds, first.text_embeds, mode=mode, fusion_weight=weight, top_k=top_k, max_pairs_per_clip=1
        )
        return [asdict(hit) for hit in hits[0]]

    def second_pass(
        self, first: FirstPass, mode: str, weight: float, top_k: int, deadline: float | None = None
    ) -> tuple[str, list[dict], list[dict]]:
        """
        Pass 2 alone: the caption with the retrieved pairs, those pairs and, with rescoring, its candidates (`caption`,
        `score`, `clap_score`, `lm_score`). Generative pair-to-pair is pair-to-pair with the kept zero-shot caption as
        the text query, so pass 1 does not run again. Without retrieval the caption is pass 1's, or with rescoring the
        best of the zero-shot candidates.
        """
        if self.kb is None or mode == "none" or top_k == 0:
            if not self.rescoring:
                return first.zero_shot, [], []
            record = caption_waveforms(
                self.model, self.processor, [first.waveform], retrieval_mode="none", **self.rescoring,
                **self.time_left(deadline), **self.generation,
            )[0]  # fmt: skip
            self.time_left(deadline)
            return record["caption"], [], record["candidates"]
        if mode == "generative_pair2pair":
            retrieval = {"retrieval_mode": "pair2pair", "text_queries": [first.zero_shot], "fusion_weight": weight}
        else:
            retrieval = {"retrieval_mode": mode}
        record = caption_waveforms(
            self.model,
            self.processor,
            [first.waveform],
            retriever=self.retriever,
            top_k=top_k,
            max_pairs_per_clip=1,
            **retrieval,
            **self.rescoring,
            **self.time_left(deadline),
            **self.generation,
        )[0]
        self.time_left(deadline)
        self.pass_two_runs += 1
        return record["caption"], record["retrieved"], record.get("candidates", [])

    # ---- the neighbour table ------------------------------------------------------------------------------------
    def table(self, pairs: list[dict], session: str) -> list[list]:
        """
        Rows of the neighbour table: rank, S, S_A, S_T, caption, a player (or why there is none) and the clip id. The
        local clips get fresh tokens of `session` (its earlier tokens end: the page shows one table).
        """
        cells = [self.audio_cell(pair["row"]) for pair in pairs]
        tokens = iter(self.audio.issue(session, [cell for cell in cells if isinstance(cell, int)]))
        cells = [player(NEIGHBOUR_ROUTE + next(tokens)) if isinstance(cell, int) else cell for cell in cells]
        return [
            [rank, score(pair["score"]), score(pair["audio_score"]), score(pair["text_score"]), pair["caption"], cell,
             pair["audio_id"] or "-"]
            for rank, (pair, cell) in enumerate(zip(pairs, cells, strict=True), start=1)
        ]  # fmt: skip

    def audio_cell(self, row: int) -> str | int:
        """
        The row's audio: its clip index where a local file passed the containment rule (the table serves it through a
        token), an `<audio>` player of an audio URL, a link to a page, or a short reason why it cannot play here.
        """
        clip = int(self.kb.clip_index[row])
        if clip < 0:
            return TEXT_ONLY
        root, path = self.kb.recorded_location(clip)
        try:
            location = clip_audio_location(root, path, self.kb.audio_roots)
        except AudioLocationError as error:
            return unavailable(str(error))
        if location is None:
            if not path:
                return unavailable("the knowledge base records no audio location for this clip")
            name = root or ABSOLUTE_ROOT
            return unavailable(f"no folder given for its root {name!r}: pass --audio-root {name}=DIR")
        if urlparse(location).scheme in ("http", "https"):
            if Path(urlparse(location).path).suffix.lower() in AUDIO_EXTENSIONS:
                return player(location)
            return f'<a href="{html.escape(location)}" target="_blank" rel="noopener noreferrer">source ↗</a>'
        return clip


def warn_unmapped_roots(kb) -> None:
    """Say which of the KB's audio roots no folder was given for: their neighbours cannot play."""
    rows = zip(kb.clips.column("audio_root").to_pylist(), kb.clips.column("audio_path").to_pylist(), strict=True)
    recorded = {root or ABSOLUTE_ROOT for root, path in rows if path and (root or is_absolute(path))}
    roots = recorded - set(kb.audio_roots)
    if roots:
        flags = " ".join(f"--audio-root {root}=DIR" for root in sorted(roots))
        logger.warning(
            "neighbours of the knowledge base under the roots %s will not play: pass %s", sorted(roots), flags
        )


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


def score(value: float) -> float | None:
    """A score for the table: 4 decimals, None when undefined (S_T of a cross-modal mode in unequal widths)."""
    return None if math.isnan(value) else round(float(value), 4)


def player(source: str) -> str:
    return f'<audio controls preload="metadata" src="{html.escape(source)}"></audio>'


def unavailable(reason: str) -> str:
    return f'<span title="{html.escape(reason)}">{NOT_AVAILABLE}</span>'


def status_line(mode: str, weight: float, top_k: int, pairs: int, reranked: bool) -> str:
    """What the page shows and where it came from."""
    if mode == "none" or top_k == 0:
        if reranked:
            return "No retrieval with these settings: **Re-caption** gives the zero-shot caption."
        return "Zero-shot: no retrieval, the caption is pass 1's."
    setting = f"`{mode}`, W = {weight:.2f}, k = {top_k}" if mode == "generative_pair2pair" else f"`{mode}`, k = {top_k}"
    if reranked:
        return (
            f"Re-ranked to {pairs} pairs with {setting} from the kept pass-1 embeddings (pass 1 did not run again). "
            "The caption above is from its own neighbours: **Re-caption** runs pass 2 with these."
        )
    return f"Pass 2 captioned with these {pairs} pairs, retrieved with {setting}."


def candidates_table(candidates: list[dict]) -> str:
    """The rescored candidates as a Markdown table (empty without rescoring), the chosen one (best score) first."""
    if not candidates:
        return ""
    lines = ["| candidate | score | CLAP | LM |", "|---|---:|---:|---:|"]
    for candidate in sorted(candidates, key=lambda c: -c["score"]):
        text = html.escape(candidate["caption"]).replace("|", "&#124;")
        lines.append(
            f"| {text} | {candidate['score']:.3f} | {candidate['clap_score']:.3f} | {candidate['lm_score']:.3f} |"
        )
    return "\n\nCLAP rescoring: the caption is the best of these candidates.\n\n" + "\n".join(lines)


def caption_clip(engine: DemoEngine, clip: str | None, mode: str, weight: float, top_k: int, session: str = ""):
    """Caption: pass 1, then pass 2 with the retrieved pairs. Returns the state, both captions, the table, a status
    (with the rescored candidates)."""
    top_k, deadline = int(top_k), engine.deadline()
    state = engine.first_pass(engine.load(clip), deadline)
    text, pairs, candidates = engine.second_pass(state, mode, weight, top_k, deadline)
    table = engine.table(pairs, session)
    status = status_line(mode, weight, top_k, len(pairs), False) + candidates_table(candidates)
    return state, state.zero_shot, text, table, status


def rerank(engine: DemoEngine, state: FirstPass | None, mode: str, weight: float, top_k: int, session: str = ""):
    """A changed setting: the table re-ranked from the kept pass-1 embeddings and a status (none before a caption)."""
    if state is None:
        return gr.skip(), gr.skip()
    top_k = int(top_k)
    pairs = engine.neighbours(state, mode, weight, top_k)
    return engine.table(pairs, session), status_line(mode, weight, top_k, len(pairs), True)


def recaption(engine: DemoEngine, state: FirstPass | None, mode: str, weight: float, top_k: int, session: str = ""):
    """Re-caption: pass 2 alone with the current settings' pairs. Returns the caption, the table, a status."""
    if state is None:
        raise gr.Error("Caption a clip first.")
    top_k = int(top_k)
    text, pairs, candidates = engine.second_pass(state, mode, weight, top_k, engine.deadline())
    status = status_line(mode, weight, top_k, len(pairs), False) + candidates_table(candidates)
    return text, engine.table(pairs, session), status


def settings_controls(engine: DemoEngine) -> list:
    """The mode, W and top-k controls (hidden without a knowledge base)."""
    config, retrieves = engine.model.config, engine.kb is not None
    return [
        gr.Radio(
            list(engine.modes), value=engine.default_mode, label="Retrieval mode", visible=retrieves, elem_id="mode"
        ),
        gr.Slider(
            0.0, 1.0, value=config.fusion_weight, step=0.05, label="W (fusion weight)", visible=retrieves,
            info="generative_pair2pair: S = W·S_A + (1−W)·S_T; moving it re-ranks without a new pass 1",
            elem_id="weight",
        ),
        gr.Slider(
            0, engine.max_top_k, value=engine.default_top_k, step=1, label="top-k", visible=retrieves, elem_id="top-k"
        ),
    ]  # fmt: skip


class DemoBlocks(gr.Blocks):
    """
    The demo page. Its `launch` (by `launch_demo`, a Space or a caller) serves the neighbours' audio through the
    engine's token route and refuses uploads over `MAX_UPLOAD`; its uploads are deleted after `CACHE_CLEANUP`.
    """

    def __init__(self, engine: DemoEngine, **kwargs):
        super().__init__(delete_cache=CACHE_CLEANUP, **kwargs)
        self.engine = engine
        self.neighbour_audio = engine.audio

    def launch(self, *args, app_kwargs: dict | None = None, max_file_size: str | int | None = MAX_UPLOAD, **kwargs):
        app_kwargs = dict(app_kwargs or {})
        app_kwargs["routes"] = [self.neighbour_audio.route(), *app_kwargs.get("routes", [])]
        return super().launch(*args, app_kwargs=app_kwargs, max_file_size=max_file_size, **kwargs)


def build_blocks(engine: DemoEngine) -> DemoBlocks:
    """The demo page over a loaded engine."""
    retrieves = engine.kb is not None

    def caption(clip: str | None, mode: str, weight: float, top_k: int, request: gr.Request):
        return caption_clip(engine, clip, mode, weight, top_k, request.session_hash)

    def change(state: FirstPass | None, mode: str, weight: float, top_k: int, request: gr.Request):
        return rerank(engine, state, mode, weight, top_k, request.session_hash)

    def again(state: FirstPass | None, mode: str, weight: float, top_k: int, request: gr.Request):
        return recaption(engine, state, mode, weight, top_k, request.session_hash)

    def closed(request: gr.Request) -> None:
        engine.audio.forget(request.session_hash)

    with DemoBlocks(engine, title="PairCap demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "# PairCap: retrieval-augmented audio captioning\n"
            "Pass 1 captions the clip zero-shot; its caption and audio retrieve (audio, caption) pairs with "
            "S = W·S_A + (1−W)·S_T; pass 2 captions again with them in the prompt.\n\n" + engine.describe()
        )
        first = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip", elem_id="clip")
                settings = settings_controls(engine)
                caption_button = gr.Button("Caption", variant="primary", elem_id="caption-button")
            with gr.Column(scale=2):
                zero_shot = gr.Textbox(label="Zero-shot caption (pass 1)", interactive=False, elem_id="zero-shot")
                final = gr.Textbox(
                    label="Caption (pass 2, with the retrieved pairs)", interactive=False, elem_id="final"
                )
                status = gr.Markdown(elem_id="status")
                recaption_button = gr.Button("Re-caption with these pairs (pass 2 only)", visible=retrieves)
        table = gr.Dataframe(
            headers=HEADERS, datatype=DATATYPES, column_widths=COLUMN_WIDTHS, interactive=False, wrap=True,
            label=TABLE_LABEL, elem_id="neighbours", visible=retrieves,
        )  # fmt: skip
        model_runs = {"concurrency_limit": 1, "concurrency_id": "paircap-model"}  # one model pass at a time
        caption_button.click(
            caption, [audio, *settings], [first, zero_shot, final, table, status], api_name="caption", **model_runs
        )
        gr.on(
            [control.change for control in settings], change, [first, *settings], [table, status], api_name="rerank",
            show_progress="hidden",
        )  # fmt: skip
        recaption_button.click(again, [first, *settings], [final, table, status], api_name="recaption", **model_runs)
        demo.unload(closed)
    return demo


def build_demo(model_id: str, **options) -> DemoBlocks:
    """The demo for a release (hub id or folder); `options` as `DemoEngine.from_release` (the knowledge base, default:
    the release's own; audio roots, device, dtype, caption length, time limit, remote code)."""
    return build_blocks(DemoEngine.from_release(model_id, **options))


def space_host(environ: Mapping[str, str]) -> str:
    """
    Where `app.py` listens: on a Hugging Face Space (`SYSTEM=spaces`) the Space's `GRADIO_SERVER_NAME` (0.0.0.0);
    elsewhere `PAIRCAP_HOST`, by default 127.0.0.1 (a `GRADIO_SERVER_NAME` meant for another app is ignored, with a
    warning, so that it never opens this one to the network).
    """
    if environ.get("SYSTEM") == "spaces":
        return environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    host = environ.get("PAIRCAP_HOST") or LOCAL_HOST
    if environ.get("GRADIO_SERVER_NAME", host) != host:
        logger.warning("GRADIO_SERVER_NAME=%s is ignored off a Space: set PAIRCAP_HOST", environ["GRADIO_SERVER_NAME"])
    return host


def launch_demo(
    demo: gr.Blocks, host: str | None = None, port: int | None = None, share: bool = False, block: bool = True
) -> str:
    """Serve the demo (host and port default to Gradio's: 127.0.0.1, or `GRADIO_SERVER_NAME`); returns its URL."""
    _, url, _ = demo.queue().launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block)
    return url
