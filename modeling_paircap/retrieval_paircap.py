"""The PairCap retriever: the part transformers' `RagRetriever` plays for a RAG model. It owns a knowledge base and the
processor that builds prompts, checks the knowledge base against a model's fingerprints, and turns the model's query
encodings into pass-2 inputs on the model's device. A model gets one with `set_retriever` or
`from_pretrained(..., retriever=...)`; without one, `generate` loads the knowledge base its `config.knowledge_base`
names, with the processor of the model's own release.

    retriever = PairCapRetriever.from_pretrained("org/paircap")  # the release's processor and configured KB
    model = PairCapForConditionalGeneration.from_pretrained("org/paircap", retriever=retriever)
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from transformers import BatchFeature, PreTrainedModel

from .configuration_paircap import PairCapConfig
from .fingerprints_paircap import weights_state
from .index_paircap import RetrievedPair
from .kb_format_paircap import METADATA_FILE, KnowledgeBaseError
from .knowledge_base_paircap import PairCapKnowledgeBase
from .processing_paircap import PairCapProcessor
from .prompt_budget_paircap import cut_captions, fit_examples, warn_rows
from .retrieval_modes_paircap import PAIR_MODES


@dataclass
class PairCapRetrieverOutput:
    """What a retriever call gives pass 2: its inputs (`input_ids`, `attention_mask`, `audio_tokens`,
    `audio_tokens_mask`, on the model's device), the retrieved pairs per query that its prompts hold (best first;
    those a prompt budget dropped left out), and the pass-1 captions it decoded (generative pair-to-pair; None
    otherwise)."""

    inputs: BatchFeature
    hits: list[list[RetrievedPair]]
    zero_shot_captions: list[str] | None = None


class PairCapRetriever:
    """
    A knowledge base with the processor that turns its retrieved pairs into prompts.

    Args:
        knowledge_base: the loaded `PairCapKnowledgeBase` to search.
        processor: the `PairCapProcessor` of the model it serves (prompt format, tokenizers, audio front end).
    """

    def __init__(self, knowledge_base: PairCapKnowledgeBase, processor: PairCapProcessor):
        self.knowledge_base = knowledge_base
        self.processor = processor
        self._checked: tuple[weakref.ref, tuple] | None = None  # the model last checked and its encoders' state

    @classmethod
    def from_pretrained(
        cls,
        release_or_kb: str | os.PathLike,
        processor: PairCapProcessor | None = None,
        *,
        knowledge_base: str | os.PathLike | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
        device: str | None = None,
        verify: str = "once",
        revision: str | None = None,
    ) -> PairCapRetriever:
        """
        Load a retriever.

        Args:
            release_or_kb: a release (folder or hub model id), whose processor and `config.knowledge_base` are used;
                or, given with `processor` and without `knowledge_base`, a knowledge base (folder or hub dataset id;
                a local folder holding a `config.json` and no `paircap_kb.json` is still read as a release).
            processor: the processor to build prompts with (default: the release's).
            knowledge_base: the knowledge base to use with the release instead of the one its config names. A relative
                name that does not exist from the working directory is looked up inside the release folder, where a
                release bundles its KB (`config.knowledge_base = "knowledge_base"`).
            audio_roots, device, verify: as `PairCapKnowledgeBase.from_pretrained` (the clip table's audio folders;
                exact torch search on a device instead of faiss; hashing each file state once or always).
            revision: the hub revision of `release_or_kb`.
        """
        if processor is not None and knowledge_base is None and not is_release_folder(release_or_kb):
            source = release_or_kb
        else:
            release = str(release_or_kb)
            if os.path.isfile(os.path.join(release, METADATA_FILE)):
                raise ValueError(f"{release}: a knowledge base folder, not a release: pass the processor with it")
            if knowledge_base is None:
                knowledge_base = PairCapConfig.from_pretrained(release, revision=revision).knowledge_base
                if knowledge_base is None:
                    raise ValueError(
                        f"{release}: the release names no knowledge base (config.knowledge_base); pass knowledge_base="
                    )
            if processor is None:
                processor = PairCapProcessor.from_pretrained(release, revision=revision, trust_remote_code=False)
            source, revision = bundled_source(knowledge_base, release), None
        kb = PairCapKnowledgeBase.from_pretrained(
            source, revision=revision, device=device, audio_roots=audio_roots, verify=verify
        )
        return cls(kb, processor)

    def check_model(self, model: PreTrainedModel) -> None:
        """
        Refuse a knowledge base embedded in another retrieval space than `model`'s CLAP, and mark its clip tokens stale
        when another token encoder made them (`knowledge_base.tokens_state`). Checked again only for another model, or
        when the model's encoder weights may have changed since.
        """
        state = weights_state(model.clap, model.get_audio_tower())
        if self._checked is not None and self._checked[0]() is model and self._checked[1] == state:
            return
        kb = self.knowledge_base
        fingerprint = model.retrieval_fingerprint()
        if kb.metadata.retrieval_fingerprint != fingerprint:
            raise KnowledgeBaseError(
                f"{kb.folder or 'the knowledge base'}: this knowledge base was embedded in another retrieval space "
                f"(CLAP fingerprint {kb.metadata.retrieval_fingerprint[:12]}…, the model's is {fingerprint[:12]}…); "
                "its embeddings do not match this model's CLAP. Rebuild it with this model: paircap kb build"
            )
        kb.check_tokens(model.token_fingerprint())
        self._checked = (weakref.ref(model), state)

    @torch.no_grad()
    def __call__(
        self,
        model: PreTrainedModel,
        audio_embeds: torch.Tensor,
        query_tokens: Sequence[torch.Tensor],
        is_long: Sequence[bool],
        *,
        zero_shot_ids: torch.Tensor | None = None,
        text_queries: list[str] | None = None,
        mode: str = "generative_pair2pair",
        fusion_weight: float = 0.5,
        top_k: int = 5,
        exclude_ids: Sequence[Collection[str]] | None = None,
        max_pairs_per_clip: int | None = 1,
        max_caption_tokens: int | None = None,
        max_prompt_length: int | None = None,
    ) -> PairCapRetrieverOutput:
        """
        Retrieve for a batch of queries and build its pass-2 inputs on the model's device.

        Args:
            model: the model the inputs are for (checked with `check_model`; its CLAP text tower embeds the text
                queries, its captioning tower encodes retrieved clips whose stored tokens are stale or absent).
            audio_embeds: `(batch, d)` CLAP audio embeddings a_q. query_tokens: per query, its pooled tokens.
            is_long: per query, whether its clip was longer than the windows kept (it keeps its length token).
            zero_shot_ids: pass-1 caption ids (generative pair-to-pair): decoded into the text queries.
            text_queries: the text half of `pair2pair` queries.
            mode, fusion_weight, top_k, exclude_ids, max_pairs_per_clip: as `PairCapKnowledgeBase.search`.
            max_caption_tokens, max_prompt_length: the prompt budget (`second_pass_inputs`); one warning names the
                KB rows it cut or dropped.
        """
        self.check_model(model)
        zero_shot_captions = None
        if zero_shot_ids is not None:
            zero_shot_captions = text_queries = self.processor.decode_captions(zero_shot_ids)
        text_embeds = None
        if mode in PAIR_MODES:
            text_embeds = model.embed_texts(**self.processor.clap_text_inputs(text_queries).to(model.device))
        hits = self.knowledge_base.search(
            audio_embeds,
            text_embeds,
            mode=mode,
            fusion_weight=fusion_weight,
            top_k=top_k,
            exclude_ids=exclude_ids,
            max_pairs_per_clip=max_pairs_per_clip,
        )
        inputs, hits = self.second_pass_inputs(
            model, hits, query_tokens, is_long, max_caption_tokens, max_prompt_length
        )
        return PairCapRetrieverOutput(inputs, hits, zero_shot_captions)

    def second_pass_inputs(
        self,
        model: PreTrainedModel,
        hits: Sequence[Sequence[RetrievedPair]],
        query_tokens: Sequence[torch.Tensor],
        is_long: Sequence[bool],
        max_caption_tokens: int | None = None,
        max_prompt_length: int | None = None,
    ) -> tuple[BatchFeature, list[list[RetrievedPair]]]:
        """
        The pass-2 inputs of a batch on the model's device: each query's retrieved pairs (their clip tokens, or tokens
        the model's captioning tower makes from the audio for an index-only or stale KB) and captions, then the query's
        own pooled tokens (kept where they are, e.g. on the GPU); and the hits the prompts hold.

        The prompt budget: captions longer than `max_caption_tokens` LM tokens are cut on a token boundary; a prompt
        longer than `max_prompt_length` tokens loses its lowest-ranked pairs until it fits (a ValueError when even
        none fit). One warning names the KB rows cut or dropped. None: no limit.
        """
        token_dim = query_tokens[0].shape[-1] if len(query_tokens) else None
        queries = [
            {"audio_tokens": tokens.flatten(0, 1) if tokens.ndim == 3 else tokens, "is_long": long}
            for tokens, long in zip(query_tokens, is_long, strict=True)
        ]
        examples = self.knowledge_base.examples(hits, partial(self.encode_clip_tokens, model), token_dim)
        pair_ids = [[hit.pair_id for hit in query] for query in hits]
        cut = cut_captions(self.processor, examples, pair_ids, max_caption_tokens)
        inputs, kept = fit_examples(self.processor, queries, examples, max_prompt_length)
        dropped = [pair_id for ids, count in zip(pair_ids, kept, strict=True) for pair_id in ids[count:]]
        warn_rows(cut, dropped, max_caption_tokens, max_prompt_length)
        return inputs.to(model.device), [list(query[:count]) for query, count in zip(hits, kept, strict=True)]

    @torch.no_grad()
    def encode_clip_tokens(self, model: PreTrainedModel, audio: list) -> list[torch.Tensor]:
        """
        The pooled prompt tokens `(windows * tokens_per_window, hidden)` of each clip (paths, arrays or audio dicts, as
        the processor takes them) from the model's captioning audio tower: what a KB stores per clip. A clip that
        cannot be loaded raises a KnowledgeBaseError naming it.
        """
        tokens = []
        for waveform in self.processor.load_audio(audio):
            if not isinstance(waveform, np.ndarray):
                raise KnowledgeBaseError(f"cannot encode the tokens of a retrieved clip: {waveform}")
            windows, _ = self.processor.window_audio(waveform)
            features = torch.as_tensor(self.processor.extract_features(windows)).to(model.device)
            tokens.append(model.pooled_audio_tokens(features).flatten(0, 1))
        return tokens


def search_device(model: PreTrainedModel) -> str | None:
    """Where a model's retriever searches by default: exact torch search on its GPU, else faiss (None)."""
    return str(model.device) if model.device.type == "cuda" else None


def is_release_folder(path: str | os.PathLike) -> bool:
    """A local folder holding a model config and no knowledge-base metadata."""
    return os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(os.path.join(path, METADATA_FILE))


def bundled_source(source: str | os.PathLike, release_folder: str) -> str | os.PathLike:
    """A relative path that does not exist from the working directory but does inside the release folder names a
    knowledge base shipped with the release (`config.knowledge_base = "knowledge_base"`)."""
    if isinstance(source, str) and not os.path.isabs(source) and not os.path.exists(source):
        bundled = os.path.join(release_folder, source)
        if os.path.isdir(bundled):
            return bundled
    return source


__all__ = ["PairCapRetriever", "PairCapRetrieverOutput", "search_device"]
