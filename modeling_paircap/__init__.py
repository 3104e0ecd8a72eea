"""PairCap: retrieval-augmented audio captioning with generative pair-to-pair retrieval, Hugging Face native.

    from modeling_paircap import PairCapForConditionalGeneration, PairCapProcessor, PairCapKnowledgeBase

The names below load their module on first use (PEP 562), so `import modeling_paircap` stays cheap: torch,
transformers, datasets and faiss are imported only by the classes that need them. Every module of this package is
also shipped flat as Hugging Face remote code, where only their own relative imports are followed; this file is not.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module of this package that defines it
_EXPORTS = {
    "PairCapConfig": "configuration_paircap",
    "RETRIEVAL_MODES": "configuration_paircap",
    "PairCapAudioEncoding": "modeling_paircap",
    "PairCapAudioProjector": "modeling_paircap",
    "PairCapForConditionalGeneration": "modeling_paircap",
    "PairCapGenerateOutput": "modeling_paircap",
    "PairCapPreTrainedModel": "modeling_paircap",
    "DEFAULT_PROMPT_TEMPLATE": "prompting_paircap",
    "PairCapProcessor": "processing_paircap",
    "TorchClapFeatures": "feature_extraction_paircap",
    "extract_clap_features": "feature_extraction_paircap",
    "KnowledgeBaseError": "kb_format_paircap",
    "KnowledgeBaseMetadata": "kb_format_paircap",
    "PairCapKnowledgeBase": "knowledge_base_paircap",
    "PairCapIndex": "index_paircap",
    "RetrievedPair": "index_paircap",
    "build_query": "index_paircap",
    "PairCapRetriever": "retrieval_paircap",
    "PairCapRetrieverOutput": "retrieval_paircap",
    "ClipTokenStore": "tokens_paircap",
    "AudioInputError": "audio_io",
    "load_audio": "audio_io",
    "load_audio_batch": "audio_io",
    "PairCapCaptioningPipeline": "pipeline_paircap",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
