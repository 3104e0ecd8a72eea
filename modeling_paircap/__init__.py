"""PairCap: retrieval-augmented audio captioning with generative pair-to-pair retrieval, Hugging Face native.

    from modeling_paircap import PairCapForConditionalGeneration, PairCapProcessor, PairCapKnowledgeBase

The names below load their module on first use (PEP 562), so `import modeling_paircap` stays cheap: torch,
transformers, datasets and faiss are imported only by the classes that need them. Every module of this package is
also shipped flat as Hugging Face remote code, where only their own relative imports are followed; this file is not.

`register_auto_classes()` makes transformers' Auto API and `pipeline` use these installed classes for a release
(model type `paircap`), without running the release's own code; the `paircap` commands call it before loading one.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

# public name -> module of this package that defines it
_EXPORTS = {
    "PairCapConfig": "configuration_paircap",
    "RETRIEVAL_MODES": "retrieval_modes_paircap",
    "PairCapAudioEncoding": "encoders_paircap",
    "PairCapAudioProjector": "modeling_paircap",
    "PairCapForConditionalGeneration": "modeling_paircap",
    "PairCapGenerateOutput": "modeling_paircap",
    "PairCapPreTrainedModel": "modeling_paircap",
    "PairCapEncoders": "encoders_paircap",
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
    "AudioInputError": "audio_arrays_paircap",
    "load_audio": "audio_loading_paircap",
    "load_audio_batch": "audio_loading_paircap",
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


@functools.cache
def register_auto_classes() -> None:
    """
    Register the installed classes with transformers: `AutoConfig` (model type `paircap`), `AutoModel` and
    `AutoModelForCausalLM` (the Auto classes a release's `auto_map` names), `AutoProcessor`, and the
    `audio-captioning` pipeline task. Then a release folder or hub id loads with them and without `trust_remote_code`:

        modeling_paircap.register_auto_classes()
        model = AutoModel.from_pretrained("org/paircap")
        captioner = pipeline(model="org/paircap", pipeline_class=modeling_paircap.PairCapCaptioningPipeline)

    Not done on `import modeling_paircap`, which stays cheap: this imports torch and transformers (about 5 s). Once
    registered, transformers prefers these classes even when `trust_remote_code=True` is passed, so it is a
    deliberate step; runs once per process.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    from .configuration_paircap import PairCapConfig
    from .modeling_paircap import PairCapForConditionalGeneration
    from .pipeline_paircap import TASK, PairCapCaptioningPipeline
    from .processing_paircap import PairCapProcessor

    AutoConfig.register(PairCapConfig.model_type, PairCapConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForCausalLM):
        auto_class.register(PairCapConfig, PairCapForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(PairCapConfig, PairCapProcessor, exist_ok=True)
    PIPELINE_REGISTRY.register_pipeline(TASK, PairCapCaptioningPipeline, pt_model=AutoModel, type="multimodal")
