"""The PairCap web demo (Gradio): caption a clip and show why, through the (audio, caption) pairs it retrieved.

    paircap demo --model mini            # or: python app.py (a Hugging Face Space as it is)

Caption runs pass 1 (the zero-shot caption), keeps its outputs (the caption, the query's CLAP audio embedding a_q and
the caption's text embedding t_q) in the page's session state, searches the knowledge base and runs pass 2 with the
retrieved pairs. Moving W, top-k or the mode re-ranks from the kept embeddings (one index search, no new pass 1);
Re-caption runs pass 2 alone with the neighbours shown. Each neighbour's audio plays in the page where the demo can
reach it: a local file (under a root given with `audio_roots`, or an absolute path) through Gradio's file route, which
serves that file alone once it is shown, or an audio URL, which the browser fetches; a page URL becomes a link.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlparse

import gradio as gr
import numpy as np
import torch
from transformers.utils import logging

from modeling_paircap.retrieval_paircap import PairCapRetriever
from paircap.captioning import (
    AUDIO_EXTENSIONS,
    caption_waveforms,
    load_release,
    load_retriever,
    max_retrieved_pairs,
    resolve_device,
    resolve_dtype,
)

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
# Gradio's file route, relative to the page so that a root path (a Space, a reverse proxy) is kept
FILE_ROUTE = "gradio_api/file="


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

    def __init__(self, model, processor, retriever: PairCapRetriever | None = None, max_new_tokens: int = 40):
        self.model = model
        self.processor = processor
        self.retriever = retriever
        self.kb = retriever.knowledge_base if retriever is not None else None
        self.generation = {"max_new_tokens": max_new_tokens, "num_beams": 1, "do_sample": False}
        self.pass_one_runs = 0
        self.pass_two_runs = 0
        self._served: set[Path] = set()

    @classmethod
    def from_release(
        cls,
        model_id: str,
        knowledge_base: str | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 40,
    ) -> DemoEngine:
        """Load a release (hub id or folder) and its knowledge base (`knowledge_base`, else the release's own)."""
        torch_device = resolve_device(device)
        model, processor = load_release(model_id, torch_device, resolve_dtype(dtype, torch_device))
        retriever = None
        if knowledge_base is not None or model.config.knowledge_base is not None:
            retriever = load_retriever(model, processor, knowledge_base, audio_roots=dict(audio_roots or {}))
            warn_unmapped_roots(retriever.knowledge_base)
        return cls(model, processor, retriever, max_new_tokens)

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
        """The clip as 48 kHz mono, with the loader's reason when it cannot be read."""
        if not audio:
            raise gr.Error("Upload or record a clip first.")
        waveform = self.processor.load_audio([audio])[0]
        if not isinstance(waveform, np.ndarray):
            raise gr.Error(str(waveform))
        return waveform

    @torch.no_grad()
    def first_pass(self, waveform: np.ndarray) -> FirstPass:
        """Pass 1 (the zero-shot caption), then a_q of the clip and t_q of the caption: everything re-ranking needs."""
        zero_shot = caption_waveforms(self.model, self.processor, [waveform], retrieval_mode="none", **self.generation)
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

    def second_pass(self, first: FirstPass, mode: str, weight: float, top_k: int) -> tuple[str, list[dict]]:
        """
        Pass 2 alone: the caption with the retrieved pairs, and those pairs. Generative pair-to-pair is pair-to-pair
        with the kept zero-shot caption as the text query, so pass 1 does not run again.
        """
        if self.kb is None or mode == "none" or top_k == 0:
            return first.zero_shot, []
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
            **self.generation,
        )[0]
        self.pass_two_runs += 1
        return record["caption"], record["retrieved"]

    # ---- the neighbour table ------------------------------------------------------------------------------------
    def table(self, pairs: list[dict]) -> list[list]:
        """Rows of the neighbour table: rank, S, S_A, S_T, caption, a player (or why there is none) and the clip id."""
        return [
            [rank, score(pair["score"]), score(pair["audio_score"]), score(pair["text_score"]), pair["caption"],
             self.audio_cell(pair["row"]), pair["audio_id"] or "-"]
            for rank, pair in enumerate(pairs, start=1)
        ]  # fmt: skip

    def audio_cell(self, row: int) -> str:
        """An `<audio>` player for the row's clip where it can be reached, else a short reason."""
        clip = int(self.kb.clip_index[row])
        if clip < 0:
            return TEXT_ONLY
        location = self.kb.audio_location(clip)
        if location is None:
            root = self.kb.clips.column("audio_root")[clip].as_py()
            if root and root not in self.kb.audio_roots:
                return unavailable(f"no folder given for its root {root!r}: pass --audio-root {root}=DIR")
            return unavailable("the knowledge base records no audio location for this clip")
        if urlparse(location).scheme in ("http", "https"):
            if Path(urlparse(location).path).suffix.lower() in AUDIO_EXTENSIONS:
                return player(location)
            return f'<a href="{html.escape(location)}" target="_blank" rel="noopener noreferrer">source ↗</a>'
        path = Path(location)
        if not path.is_file():
            return unavailable(f"no file at {location}")
        return player(FILE_ROUTE + quote(str(self.serve(path)), safe="/"))

    def serve(self, path: Path) -> Path:
        """Let Gradio's file route serve this one file (the resolved path: Gradio resolves links before checking)."""
        resolved = path.resolve()
        if resolved not in self._served:
            gr.set_static_paths([resolved])
            self._served.add(resolved)
        return resolved


def warn_unmapped_roots(kb) -> None:
    """Say which of the KB's audio roots no folder was given for: their neighbours cannot play."""
    roots = set(kb.clips.column("audio_root").unique().to_pylist()) - {"", None} - set(kb.audio_roots)
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


def caption_clip(engine: DemoEngine, clip: str | None, mode: str, weight: float, top_k: int):
    """Caption: pass 1, then pass 2 with the retrieved pairs. Returns the state, both captions, the table, a status."""
    top_k = int(top_k)
    state = engine.first_pass(engine.load(clip))
    text, pairs = engine.second_pass(state, mode, weight, top_k)
    return state, state.zero_shot, text, engine.table(pairs), status_line(mode, weight, top_k, len(pairs), False)


def rerank(engine: DemoEngine, state: FirstPass | None, mode: str, weight: float, top_k: int):
    """A changed setting: the table re-ranked from the kept pass-1 embeddings and a status (none before a caption)."""
    if state is None:
        return gr.skip(), gr.skip()
    top_k = int(top_k)
    pairs = engine.neighbours(state, mode, weight, top_k)
    return engine.table(pairs), status_line(mode, weight, top_k, len(pairs), True)


def recaption(engine: DemoEngine, state: FirstPass | None, mode: str, weight: float, top_k: int):
    """Re-caption: pass 2 alone with the current settings' pairs. Returns the caption, the table, a status."""
    if state is None:
        raise gr.Error("Caption a clip first.")
    top_k = int(top_k)
    text, pairs = engine.second_pass(state, mode, weight, top_k)
    return text, engine.table(pairs), status_line(mode, weight, top_k, len(pairs), False)


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


def build_blocks(engine: DemoEngine) -> gr.Blocks:
    """The demo page over a loaded engine."""
    retrieves = engine.kb is not None
    with gr.Blocks(title="PairCap demo", analytics_enabled=False) as demo:
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
            partial(caption_clip, engine), [audio, *settings], [first, zero_shot, final, table, status],
            api_name="caption", **model_runs,
        )  # fmt: skip
        gr.on(
            [control.change for control in settings], partial(rerank, engine), [first, *settings], [table, status],
            api_name="rerank", show_progress="hidden",
        )  # fmt: skip
        recaption_button.click(
            partial(recaption, engine), [first, *settings], [final, table, status], api_name="recaption", **model_runs
        )
    return demo


def build_demo(
    model_id: str,
    knowledge_base: str | None = None,
    audio_roots: Mapping[str, str | os.PathLike] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_new_tokens: int = 40,
) -> gr.Blocks:
    """The demo for a release (hub id or folder) and a knowledge base (default: the release's own)."""
    engine = DemoEngine.from_release(model_id, knowledge_base, audio_roots, device, dtype, max_new_tokens)
    return build_blocks(engine)


def launch_demo(
    demo: gr.Blocks, host: str | None = None, port: int | None = None, share: bool = False, block: bool = True
) -> str:
    """Serve the demo (host and port default to Gradio's, e.g. `GRADIO_SERVER_NAME` on a Space); returns its URL."""
    _, url, _ = demo.queue().launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block)
    return url
