"""What `PairCapForConditionalGeneration.save_pretrained` adds to a transformers save, so that a release saved or
pushed from a loaded model is complete: the remote code (every file of this package the model imports, the pipeline's
too, whether the model's class is the installed one or a release's `trust_remote_code` copy), the `auto_map` and
`custom_pipelines` entries naming it, and the knowledge base the model retrieves from: copied into the release as
`knowledge_base/` (hard links where possible, then checked against the KB's own size and sha256 records), or, for a
KB loaded from the hub, named by its dataset id in `config.knowledge_base`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from transformers import PreTrainedModel
from transformers.utils import logging

from .encoders_paircap import PairCapEncoders
from .file_io_paircap import link_or_copy, replacing_folder
from .kb_format_paircap import METADATA_FILE, KnowledgeBaseError, KnowledgeBaseMetadata, kb_file_names
from .kb_integrity_paircap import check_kb_files
from .retrieval_paircap import bundled_source

logger = logging.get_logger(__name__)

KB_FOLDER = "knowledge_base"  # where a release bundles its knowledge base (`config.knowledge_base = "knowledge_base"`)
KB_CARD = "README.md"
ENCODERS_AUTO_MAP_KEY = "PairCapEncoders"  # `auto_map` entry of the encoders class the knowledge-base tools load
HUB_OPTIONS = ("commit_message", "commit_description", "revision", "create_pr", "private")


def remote_name(cls: type) -> str:
    """`module.Class` as remote code names a class of the release folder (its files are copied flat)."""
    return f"{cls.__module__.split('.')[-1]}.{cls.__name__}"


def register_remote_code(model: PreTrainedModel) -> None:
    """
    Make transformers' `save_pretrained` write the model's remote code and `auto_map` (as loading a model with
    `AutoModel...from_pretrained(trust_remote_code=True)` does): the config class registers for `AutoConfig`, the
    model class for `AutoModelForCausalLM` (a class registers under one auto class, so `AutoModel` is written into
    `config.auto_map` directly, and so is `PairCapEncoders`, the encoders alone, under `ENCODERS_AUTO_MAP_KEY`).
    `config.custom_pipelines` is the entry `Pipeline.save_pretrained` writes for a registered pipeline:
    `pipeline(model=release, trust_remote_code=True)` reads it.
    """
    # a relative import transformers follows: the pipeline's file travels with the model's remote code (no model file
    # imports it at module level), and a release loaded as remote code brings it along for its next save
    from .pipeline_paircap import TASK, PairCapCaptioningPipeline

    config = model.config
    type(config).register_for_auto_class()
    type(model).register_for_auto_class("AutoModelForCausalLM")
    config.auto_map = {
        **(getattr(config, "auto_map", None) or {}),
        "AutoModel": remote_name(type(model)),
        ENCODERS_AUTO_MAP_KEY: remote_name(PairCapEncoders),
    }
    config.custom_pipelines = {
        TASK: {"impl": remote_name(PairCapCaptioningPipeline), "pt": ["AutoModel"], "type": "multimodal"}
    }


def knowledge_base_to_save(model: PreTrainedModel) -> tuple[Path | None, str | None]:
    """
    The knowledge base a saved release should carry: (local folder to bundle, or None; the `config.knowledge_base`
    value to write). The model's retriever's KB when it has one (a hub KB is named by its dataset id), else the one its
    config names (a bundled or local folder is bundled again; a hub id is kept); (None, None) without a KB.
    """
    retriever = model.retriever or (model._configured_retriever[1] if model._configured_retriever else None)
    if retriever is not None:
        kb = retriever.knowledge_base
        if kb.hub_id is not None:
            return None, kb.hub_id
        if kb.folder is None:
            raise ValueError("the model's knowledge base has no folder: save it with its save_pretrained first")
        return Path(kb.folder), KB_FOLDER
    source = model.config.knowledge_base
    if source is None:
        return None, None
    resolved = bundled_source(source, str(model.name_or_path)) if model.name_or_path else source
    return (Path(resolved), KB_FOLDER) if os.path.isdir(resolved) else (None, source)


@contextlib.contextmanager
def configured_knowledge_base(model: PreTrainedModel, value: str | None) -> Iterator[None]:
    """`model.config.knowledge_base` set to `value` while the config is written, then restored: the loaded model
    keeps retrieving from where it did."""
    before = model.config.knowledge_base
    model.config.knowledge_base = value
    try:
        yield
    finally:
        model.config.knowledge_base = before


def warn_unresolved_knowledge_base(folder: str | os.PathLike, configured: str | None) -> None:
    """Warn when the saved config names a KB by a relative path found neither in the saved folder nor from here (e.g.
    the bundled KB of a release loaded from the hub, which is not downloaded): the saved release cannot retrieve."""
    hub_id = configured is not None and configured.count("/") == 1 and not configured.startswith(".")
    if configured is None or os.path.isabs(configured) or hub_id:
        return  # none, an absolute path, or a hub dataset id
    if not os.path.isdir(os.path.join(folder, configured)) and not os.path.isdir(configured):
        logger.warning(
            "%s: config.knowledge_base names %r, which is not in the saved folder: give the model a retriever "
            "(model.set_retriever(...)) whose knowledge base it should carry, or copy the KB there",
            folder,
            configured,
        )


def bundle_knowledge_base(source: Path, target: str | os.PathLike) -> None:
    """
    Copy the knowledge base in `source` to `target` (its recorded files, metadata and card; hard links where
    possible), checked against its metadata with every file hashed (`check_kb_files(verify="always")`) before it
    replaces `target`. Skipped when `target` is `source`, or already holds the same KB (the same metadata, its files
    of the recorded sizes and hashes).
    """
    target = Path(target)
    metadata = KnowledgeBaseMetadata.load(source)
    if target.exists() and (target.resolve() == source.resolve() or holds_same_kb(target, source, metadata)):
        return
    names = list(metadata.files) or kb_file_names(source, metadata)
    names += [METADATA_FILE] + ([KB_CARD] if (source / KB_CARD).is_file() else [])
    with replacing_folder(target, marker=METADATA_FILE) as staging:
        for name in names:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source / name, staging / name)
        try:
            check_kb_files(staging, metadata, verify="always")
        except KnowledgeBaseError as error:  # the copy holds the source's bytes: name the source's file
            raise KnowledgeBaseError(str(error).replace(str(staging), str(source))) from None


def holds_same_kb(target: Path, source: Path, metadata: KnowledgeBaseMetadata) -> bool:
    """`target` holds the KB of `source`: byte-equal metadata with a file record, and its files pass that record."""
    theirs = target / METADATA_FILE
    if not metadata.files or not theirs.is_file() or theirs.read_bytes() != (source / METADATA_FILE).read_bytes():
        return False
    try:
        check_kb_files(target, metadata)
    except Exception:  # noqa: BLE001 - any failed check (a KnowledgeBaseError, a missing file) means: copy again
        return False
    return True


def upload_release(folder: str | os.PathLike, repo_id: str, token: str | bool | None = None, **options) -> object:
    """
    Upload a saved release folder to the hub model repo `repo_id` (created when missing) with `HfApi.upload_folder`,
    sub-folders included: transformers' own upload goes one folder level deep, which misses `knowledge_base/data/`.
    `options`: `HUB_OPTIONS` (`private`, and those of the commit). Returns the commit info.
    """
    from huggingface_hub import HfApi

    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown:
        raise TypeError(f"push_to_hub got unknown options {unknown}; it takes {list(HUB_OPTIONS)}")
    api = HfApi(token=token if isinstance(token, str) else None)
    repo_id = api.create_repo(repo_id, private=options.pop("private", None), exist_ok=True).repo_id
    options.setdefault("commit_message", "Upload PairCap release")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), **options)
