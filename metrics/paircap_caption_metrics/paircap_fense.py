"""
FENSE (Zhou et al., ICASSP 2022) for the PairCap caption metrics, as the FENSE reference code and aac-metrics compute
it: SBERT similarity = mean over an item's references of the cosine between the candidate's and the reference's
sentence embeddings (paraphrase-TinyBERT-L6-v2: BERT, mean pooling, L2-normalised), and a fluency error flag when the
error detector's (echecker_clotho_audiocaps_base) last sigmoid output exceeds 0.9; a flagged caption's score is
multiplied by 1 - 0.9. Torch and transformers are imported only when the weights are found. Stands alone (part of
the `evaluate` metric module, no project imports).
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SBERT_ENV = "PAIRCAP_FENSE_SBERT"
ECHECKER_ENV = "PAIRCAP_FENSE_ECHECKER"
CACHE_ENV = "PAIRCAP_METRICS_CACHE"
SBERT_REPO = "sentence-transformers/paraphrase-TinyBERT-L6-v2"
ECHECKER_FILE = "echecker_clotho_audiocaps_base.ckpt"
ECHECKER_SHA256 = "1a719f090af70614bbdb9f9437530b7e133c48cfa4a58d964de0d47fc974a2fa"
ECHECKER_URL = f"https://github.com/blmoistawinde/fense/releases/download/V0.1/{ECHECKER_FILE}"
ERROR_THRESHOLD = 0.9
PENALTY = 0.9
_ECHECKER_MAX_LEN = 64
_SBERT_MAX_LEN = 128


def metrics_cache() -> Path:
    """The one folder `paircap metrics download` fills: `$PAIRCAP_METRICS_CACHE`, else ~/.cache/paircap/metrics."""
    folder = os.environ.get(CACHE_ENV)
    return Path(folder).expanduser() if folder else Path.home() / ".cache" / "paircap" / "metrics"


def find_sbert() -> tuple[Path | None, str]:
    """The SBERT model folder (`$PAIRCAP_FENSE_SBERT`, the metrics cache, the HF hub cache), or None and why not."""
    explicit = os.environ.get(SBERT_ENV)
    if explicit:
        folder = Path(explicit).expanduser()
        if (folder / "config.json").is_file():
            return folder, ""
        return None, f"{SBERT_ENV}={explicit} has no config.json (a sentence-transformers / transformers model folder)"
    cached = metrics_cache() / SBERT_REPO.split("/")[1]
    if (cached / "config.json").is_file():
        return cached, ""
    hub = _hub_snapshot(SBERT_REPO)
    if hub is not None:
        return hub, ""
    return None, (
        f"FENSE needs the SBERT model {SBERT_REPO}, found neither in {SBERT_ENV}, {cached} nor the Hugging Face cache: "
        "run `paircap metrics download` or set "
        f"{SBERT_ENV} to its folder"
    )


def find_echecker() -> tuple[Path | None, str]:
    """The error-detector checkpoint (`$PAIRCAP_FENSE_ECHECKER`, the metrics cache, FENSE's ~/.cache/fense)."""
    explicit = os.environ.get(ECHECKER_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        return (path, "") if path.is_file() else (None, f"{ECHECKER_ENV}={explicit} is not a file")
    places = [metrics_cache() / ECHECKER_FILE, Path.home() / ".cache" / "fense" / ECHECKER_FILE]
    for path in places:
        if path.is_file():
            return path, ""
    return None, (
        f"the FENSE error detector {ECHECKER_FILE} is in neither {ECHECKER_ENV} nor {' nor '.join(map(str, places))}: "
        f"run `paircap metrics download` or set {ECHECKER_ENV} to the file ({ECHECKER_URL})"
    )


def _hub_snapshot(repo: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _resolve_encoder(model_type: str) -> str:
    """The checkpoint's encoder name as a local folder where there is one (a path, or under the metrics cache)."""
    for candidate in (Path(model_type).expanduser(), metrics_cache() / model_type):
        if (candidate / "config.json").is_file():
            return str(candidate)
    return model_type  # a hub name: transformers finds it in its cache (offline lookups only)


def sbert_similarities(predictions: Sequence[str], references: Sequence[Sequence[str]], folder: Path) -> list[float]:
    """Per item: mean over its references of cos(SBERT(candidate), SBERT(reference))."""
    cands = embed_sentences(list(predictions), folder)
    refs = embed_sentences([ref for item in references for ref in item], folder)
    bounds = np.cumsum([0, *(len(item) for item in references)])
    return [float((refs[bounds[i] : bounds[i + 1]] @ cands[i]).mean()) for i in range(len(cands))]


def embed_sentences(sentences: list[str], folder: Path, batch_size: int = 32) -> np.ndarray:
    """`(n, d)` L2-normalised mean-pooled embeddings of a BERT sentence-transformers model (transformers only)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(
                sentences[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=_SBERT_MAX_LEN,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def error_probabilities(sentences: Sequence[str], checkpoint: Path, batch_size: int = 32) -> list[float]:
    """
    The error detector's probability that each caption is not fluent: a checkpoint dict {model_type, num_classes,
    state_dict} (FENSE's format) of a BERT encoder whose [CLS] state feeds one linear layer; the last sigmoid output.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    states = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(states, dict) or not {"model_type", "num_classes", "state_dict"} <= states.keys():
        raise ValueError(f"{checkpoint}: not a FENSE error-detector checkpoint (model_type, num_classes, state_dict)")
    encoder_name = _resolve_encoder(states["model_type"])
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(encoder_name, local_files_only=True))
    head = torch.nn.Linear(encoder.config.hidden_size, states["num_classes"])
    state = dict(states["state_dict"])
    state.pop("encoder.embeddings.position_ids", None)  # a buffer older transformers saved
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    head.load_state_dict({k[len("clf.") :]: v for k, v in state.items() if k.startswith("clf.")})
    encoder.eval()
    tokenizer = AutoTokenizer.from_pretrained(encoder_name, local_files_only=True)
    texts = [re.sub(r"[^\w\s]", "", sentence).lower() for sentence in sentences]  # FENSE's text_preprocess
    probs = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                padding="max_length",
                truncation=True,
                max_length=_ECHECKER_MAX_LEN,
                return_tensors="pt",
            )
            cls = encoder(**batch).last_hidden_state[:, 0, :]
            probs.extend(torch.sigmoid(head(cls))[:, -1].tolist())
    return [float(p) for p in probs]


def fluency_penalised(scores: Sequence[float], error_probs: Sequence[float]) -> list[float]:
    """score x (1 - 0.9 x [error probability > 0.9]): FENSE from SBERT similarity, SPIDEr-FL from SPIDEr."""
    return [s * (1 - PENALTY * float(p > ERROR_THRESHOLD)) for s, p in zip(scores, error_probs, strict=True)]
