"""Load a release for the command line (`release_names`: how a name is read): a check of a local folder that names
the file at fault, and the classes to load with: the installed PairCap classes, or with `trust_remote_code` the
release's own Python files (code from whoever made the release, run on load)."""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from tokenizers import Tokenizer
from transformers import PreTrainedConfig
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.utils import cached_file

from modeling_paircap import register_auto_classes
from modeling_paircap.configuration_paircap import PairCapConfig
from modeling_paircap.encoders_paircap import PairCapEncoders
from modeling_paircap.kb_format_paircap import METADATA_FILE as KB_METADATA_FILE
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from modeling_paircap.saving_paircap import ENCODERS_AUTO_MAP_KEY
from paircap.hub_access import ModelLoadError, is_hub_id, load_failure
from paircap.release_names import PATH_PREFIXES

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# what loading a release raises for a bad or missing file: JSON and Unicode errors are ValueErrors
LOAD_ERRORS = (OSError, ValueError, SafetensorError)


def check_release_folder(folder: Path) -> None:
    """
    Refuse a local folder that cannot load as a release, naming the file and the problem: a knowledge base or other
    folder without `config.json`, a malformed JSON or tokenizer file, or weights only as pickle (`pytorch_model.bin`,
    which can run code when unpickled).
    """
    if not (folder / "config.json").is_file():
        if (folder / KB_METADATA_FILE).is_file():
            raise ModelLoadError(f"{folder} is a knowledge base, not a release: pass it as --kb, a release as --model")
        raise ModelLoadError(f"{folder} is not a release folder: it has no config.json")
    for path in release_json_files(folder):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise ModelLoadError(f"{path}: not valid JSON ({error})") from None
        if path.name == "tokenizer.json":
            try:
                Tokenizer.from_file(str(path))
            except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad tokenizer
                raise ModelLoadError(f"{path}: not a valid tokenizer ({error})") from None
    if not any((folder / name).is_file() for name in SAFE_WEIGHTS):
        pickled = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
        if pickled:
            raise ModelLoadError(
                f"{folder / pickled[0]}: pickle weights are refused (unpickling can run code); the release needs "
                "model.safetensors (re-save it with save_pretrained where you trust the file)"
            )
        raise ModelLoadError(f"{folder} has no weights: model.safetensors is missing")


def release_json_files(folder: Path) -> list[Path]:
    """The JSON files of a release folder and of its sub-folders (e.g. `clap_tokenizer/`), a knowledge base's aside
    (its loader checks those against the sizes and hashes it records)."""
    folders = [folder] + [
        sub
        for sub in sorted(folder.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and not (sub / KB_METADATA_FILE).is_file()
    ]
    return [path for sub in folders for path in sorted(sub.glob("*.json"))]


def remote_class(model_id: str, config_file: str, auto_class: str) -> type:
    """The class the release's own code defines for `auto_class`, as `auto_map` in its `config_file` names it.
    Resolved directly, not through the Auto API: once `register_auto_classes()` ran in this process, that API gives the
    installed classes even with `trust_remote_code=True`."""
    with open(cached_file(model_id, config_file), encoding="utf-8") as handle:
        reference = json.load(handle).get("auto_map", {}).get(auto_class)
    if reference is None:
        raise ModelLoadError(f"{model_id} carries no remote code: {config_file} names no {auto_class} in auto_map")
    return get_class_from_dynamic_module(reference, model_id)


def release_classes(model_id: str, trust_remote_code: bool) -> tuple[type, type, type]:
    """
    The (config, model, processor) classes to load `model_id` with: the installed PairCap classes, or with
    `trust_remote_code` the release's own. Registers the installed ones with the Auto API either way: a processor's
    tokenizers look the release's config up through `AutoConfig`, which would otherwise ask whether to run its code.
    """
    register_auto_classes()
    if not trust_remote_code:
        return PairCapConfig, PairCapForConditionalGeneration, PairCapProcessor
    return (
        remote_class(model_id, "config.json", "AutoConfig"),
        remote_class(model_id, "config.json", "AutoModel"),
        remote_class(model_id, "processor_config.json", "AutoProcessor"),
    )


def load_release_config(model_id: str, trust_remote_code: bool = False):
    """The release's `PairCapConfig` alone (no weights), to check arguments against before the model loads; a folder
    that is no PairCap release is refused with what is wrong."""
    if not is_hub_id(model_id):
        check_release_folder(Path(model_id).expanduser())
    elif model_id.startswith(PATH_PREFIXES):
        raise ModelLoadError(f"{model_id}: no such release folder")
    try:
        model_type = PreTrainedConfig.get_config_dict(model_id)[0].get("model_type")
        if model_type == PairCapConfig.model_type:
            config_class, _, _ = release_classes(model_id, trust_remote_code)
            return config_class.from_pretrained(model_id)
    except LOAD_ERRORS as error:
        if isinstance(error, ModelLoadError):
            raise
        raise load_failure(error, model_id) from error
    raise ModelLoadError(f"{model_id} is not a PairCap release: its config.json has model_type {model_type!r}")


def load_release(
    model_id: str,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    features: str | None = None,
    trust_remote_code: bool = False,
):
    """
    (model, processor) of a release (hub id or folder), the model in eval mode: with the installed PairCap classes,
    or with `trust_remote_code` the release's own code. Weights load from safetensors only. `features` picks the
    log-mel implementation (`torch`: 2-2.7x less CPU than transformers' numpy extractor, same features; default: the
    release's). Every expected failure is a `ModelLoadError` naming the release, or the file, and the problem.
    """
    config = load_release_config(model_id, trust_remote_code)
    _, model_class, processor_class = release_classes(model_id, trust_remote_code)
    processor_kwargs = {"feature_backend": features} if features else {}
    model_kwargs = {"dtype": dtype} if dtype else {}
    try:
        processor = processor_class.from_pretrained(model_id, **processor_kwargs)
        model = model_class.from_pretrained(model_id, config=config, use_safetensors=True, **model_kwargs)
    except LOAD_ERRORS as error:
        raise load_failure(error, model_id) from error
    return (model.to(device) if device is not None else model).eval(), processor


def load_encoders(
    model_id: str,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
):
    """
    (encoders, processor) of a release for the knowledge-base tools: `PairCapEncoders`, its CLAP and captioning audio
    tower alone (the language model is never built and its weights never read), in eval mode, with the release's
    processor. With `trust_remote_code`, the release's own encoders class, as `auto_map["PairCapEncoders"]` names it
    (releases saved by `save_pretrained` name it). Errors as `load_release`.
    """
    config = load_release_config(model_id, trust_remote_code)
    _, _, processor_class = release_classes(model_id, trust_remote_code)
    encoders_class = PairCapEncoders
    if trust_remote_code:
        encoders_class = remote_class(model_id, "config.json", ENCODERS_AUTO_MAP_KEY)
    model_kwargs = {"dtype": dtype} if dtype else {}
    try:
        processor = processor_class.from_pretrained(model_id)
        encoders = encoders_class.from_pretrained(model_id, config=config, use_safetensors=True, **model_kwargs)
    except LOAD_ERRORS as error:
        raise load_failure(error, model_id) from error
    return (encoders.to(device) if device is not None else encoders).eval(), processor
