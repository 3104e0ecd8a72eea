"""The PairCap knowledge base: a datasets repo of (audio, caption) pairs with their CLAP embeddings and a FAISS index
over `[audio_embedding ; text_embedding]`, and, once per clip, where its audio lives and its pooled prompt tokens.

Folder layout (format 2, what `save_pretrained` and `datasets_scripts` write)::

    README.md                       dataset card; its `configs` point `load_dataset` at data/*.parquet
    paircap_kb.json                 metadata: the two fingerprints, dimensions, index type, counts
    index.faiss                     inner-product index, vector i = row i (the one copy of the vectors in memory)
    data/train-<build>-*.parquet    one row per pair (ROW_COLUMNS); `clip_index` points into clips.parquet
    clips.parquet                   one row per clip (CLIP_COLUMNS): audio id, length flag, where its audio lives
    tokens.safetensors              the clips' pooled tokens (`tokens_paircap.py`); absent in an index-only KB

Two encoders, two fingerprints: the embeddings and the index live in the frozen retrieval space (the pretrained CLAP),
valid for every release built on that CLAP (`retrieval_fingerprint`); the tokens are valid only for the token encoder
that made them (`token_fingerprint`). A KB whose tokens are stale still searches; its tokens are refused with the
command that refreshes them, or computed from the audio on the fly when `audio_roots` are given.

The files are untrusted input. `paircap_kb.json` records the size and sha256 of every other file it describes (`files`:
relative name -> {size, sha256}; the card is not recorded), and loading refuses, with a `KnowledgeBaseError` naming the
file and the check, before reading anything large: a missing, extra or resized file (os.stat against the record); a
FAISS index whose header (type, dimension, vector count, metric) disagrees with the metadata or whose announced vector
and list sizes do not fit the file (parsed here, before faiss allocates); parquet files whose footers do not give the
recorded row counts and embedding widths; then any file whose sha256 differs (hashed on the first load of each file
state, remembered in the HF cache; see `verified_cache_dir`); and, once read, index vectors that differ from the rows'
own embeddings in a spot-check. A KB written before the record existed loads with one warning and every check but the
sizes and hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.utils import logging

from .file_io_paircap import file_sha256, link_or_copy, record_files, replacing_folder, write_atomic, write_stream
from .retrieval_paircap import PairCapRetriever, RetrievedPair, flat_index, require_faiss
from .tokens_paircap import TOKENS_FILE, ClipTokenStore, DeviceClipTokens

try:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the knowledge base needs `datasets` (and its pyarrow); plain captioning does not
    datasets = pa = pq = None

if TYPE_CHECKING:
    from .modeling_paircap import PairCapForConditionalGeneration
    from .processing_paircap import PairCapProcessor

logger = logging.get_logger(__name__)

KB_FORMAT_VERSION = 2
METADATA_FILE = "paircap_kb.json"
INDEX_FILE = "index.faiss"
CLIPS_FILE = "clips.parquet"
DATA_DIR = "data"
MAX_SHARD_BYTES = 500 * 2**20

# Row schema. Text-only entries (RECAP's caption datastore) have a zero audio embedding, has_audio False and
# clip_index -1.
ROW_COLUMNS = (
    "pair_id",
    "audio_id",
    "caption",
    "source",
    "split",
    "duration",
    "has_audio",
    "clip_index",
    "audio_embedding",
    "text_embedding",
)
# Clip schema: `audio_path` is relative to the corpus folder named `audio_root` (given as `--root NAME=DIR` or
# `audio_roots={NAME: DIR}`), absolute when `audio_root` is empty, or a URL.
CLIP_COLUMNS = ("audio_id", "is_long", "duration", "audio_root", "audio_path")
SEARCH_COLUMNS = ("pair_id", "audio_id", "caption", "clip_index")

UPGRADE_COMMAND = "paircap kb upgrade --kb {folder} --model RELEASE"
TOKENS_COMMAND = "paircap kb tokens --kb {folder} --model RELEASE --root NAME=DIR ..."
RECORD_COMMAND = (
    'python -c "from modeling_paircap.knowledge_base_paircap import record_file_hashes; record_file_hashes({folder!r})"'
)

VERIFY_MODES = ("once", "always")  # `from_pretrained(verify=...)`: hash each file state once, or on every load
VERIFIED_CACHE_ENV = "PAIRCAP_VERIFIED_CACHE"  # where the verified file states are remembered (default: HF_HOME)
RACY_NS = 2 * 10**9  # a file changed this close to its hashing may change again unseen (coarse mtimes): not remembered
MAX_METADATA_BYTES = 16 * 2**20
SPOT_CHECK_ROWS = 256  # index vectors compared with the rows' embeddings on every load
SPOT_CHECK_GROUPS = 8  # ... taken from the start of this many parquet row groups, spread over the KB
SPOT_CHECK_TOLERANCE = 1e-6
_warned_unverified: set[str] = set()


def kb_row_features(audio_dim: int, text_dim: int):
    """The `datasets.Features` of knowledge-base rows."""
    require_datasets()
    return datasets.Features(
        {
            "pair_id": datasets.Value("string"),
            "audio_id": datasets.Value("string"),
            "caption": datasets.Value("string"),
            "source": datasets.Value("string"),
            "split": datasets.Value("string"),
            "duration": datasets.Value("float32"),
            "has_audio": datasets.Value("bool"),
            "clip_index": datasets.Value("int32"),
            "audio_embedding": datasets.List(datasets.Value("float32"), length=audio_dim),
            "text_embedding": datasets.List(datasets.Value("float32"), length=text_dim),
        }
    )


def clip_schema():
    """The Arrow schema of `clips.parquet`."""
    require_datasets()
    return pa.schema(
        [
            ("audio_id", pa.string()),
            ("is_long", pa.bool_()),
            ("duration", pa.float32()),
            ("audio_root", pa.string()),
            ("audio_path", pa.string()),
        ]
    )


def require_datasets():
    """The `datasets` module, or a clear error saying how to get it."""
    if datasets is None:
        raise ImportError("The PairCap knowledge base needs the `datasets` library: pip install datasets")
    return datasets


class KnowledgeBaseError(ValueError):
    """A knowledge base that cannot be used: missing or corrupt files, another retrieval space, or stale tokens."""


@dataclass
class KnowledgeBaseMetadata:
    """What `paircap_kb.json` records about a knowledge base."""

    retrieval_fingerprint: str
    audio_dim: int
    text_dim: int
    num_pairs: int
    num_clips: int
    token_fingerprint: str | None = None  # None: an index-only KB (no tokens.safetensors)
    token_dim: int = 0
    audio_tokens_per_window: int = 0
    num_text_only: int = 0
    index_factory: str = "Flat"
    index_recall_at_10: float | None = None
    sources: dict[str, int] = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    evaluation_overlap: dict = field(default_factory=dict)
    build_id: str = ""
    # relative file name -> {"size": bytes, "sha256": hex digest} of every file but this one and the card; empty in a
    # KB written before sizes and hashes were recorded
    files: dict[str, dict] = field(default_factory=dict)
    format_version: int = KB_FORMAT_VERSION

    @property
    def has_tokens(self) -> bool:
        return self.token_fingerprint is not None

    def save(self, folder: str | os.PathLike) -> None:
        text = json.dumps(self.__dict__, indent=2, sort_keys=True)
        write_atomic(Path(folder, METADATA_FILE), lambda temporary: temporary.write_text(text))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> KnowledgeBaseMetadata:
        path = Path(folder, METADATA_FILE)
        if not path.is_file():
            raise KnowledgeBaseError(f"{path}: missing; a PairCap knowledge base folder holds {METADATA_FILE}")
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise KnowledgeBaseError(
                f"{path}: {path.stat().st_size} bytes, not a PairCap knowledge base metadata file (check: size)"
            )
        try:
            values = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise KnowledgeBaseError(f"{path}: not a valid PairCap knowledge base metadata file ({error})") from None
        version = values.get("format_version") if isinstance(values, dict) else None
        if version != KB_FORMAT_VERSION:
            raise KnowledgeBaseError(
                f"{path}: knowledge base format {version}, this code reads format {KB_FORMAT_VERSION}. "
                + (
                    f"Convert it in place with: {UPGRADE_COMMAND.format(folder=folder)}"
                    if version == 1
                    else "Rebuild it with paircap kb build"
                )
            )
        try:
            metadata = cls(**values)
        except TypeError as error:
            raise KnowledgeBaseError(f"{path}: not a valid PairCap knowledge base metadata file ({error})") from None
        metadata.check(path)
        return metadata

    def check(self, path: Path) -> None:
        """The fields later checks and allocations rely on: counts and widths, and the `files` record's shape."""
        for name in ("audio_dim", "text_dim", "num_pairs", "num_clips", "token_dim", "num_text_only"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise KnowledgeBaseError(f"{path}: {name} is {value!r}, not a count (check: metadata)")
        if self.audio_dim < 1 or self.text_dim < 1:
            raise KnowledgeBaseError(f"{path}: embedding widths must be positive (check: metadata)")
        if not isinstance(self.index_factory, str):
            raise KnowledgeBaseError(f"{path}: index_factory is {self.index_factory!r}, not a string (check: metadata)")
        if not isinstance(self.files, dict):
            raise KnowledgeBaseError(f"{path}: `files` is not a mapping of file records (check: metadata)")
        for name, record in self.files.items():
            if (
                not isinstance(name, str)
                or not Path(name).parts
                or Path(name).is_absolute()
                or ".." in Path(name).parts
            ):
                raise KnowledgeBaseError(
                    f"{path}: `files` names {name!r}, not a file inside the folder (check: metadata)"
                )
            size, digest = (record.get("size"), record.get("sha256")) if isinstance(record, dict) else (None, None)
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or size < 0
                or not isinstance(digest, str)
                or not re.fullmatch(r"[0-9a-f]{64}", digest)
            ):
                raise KnowledgeBaseError(f"{path}: the record of {name} is not {{size, sha256}} (check: metadata)")


def resolve_folder(id_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a hub dataset id, downloaded (or taken from the cache) with huggingface_hub."""
    path = Path(id_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(id_or_path).count("/") != 1:
        raise KnowledgeBaseError(f"{id_or_path}: not a knowledge base folder nor a hub dataset id (owner/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(id_or_path), repo_type="dataset", revision=revision))
    except Exception as error:  # offline, missing repo, auth: all end here with the same advice
        raise KnowledgeBaseError(
            f"Could not fetch the knowledge base {id_or_path!r} from the hub ({type(error).__name__}: {error}). "
            "Pass a local knowledge base folder instead (one built with `paircap kb build`)."
        ) from None


ClipEncoder = Callable[[list[dict]], list]
"""Encodes clips given as `{"path": ...}` dicts into pooled prompt tokens, one `(n, token_dim)` tensor per clip."""


class PairCapKnowledgeBase:
    """
    A knowledge base ready to search and to give prompt examples: its search columns (Arrow), clip table, metadata,
    retriever over the index, and clip tokens (memory-mapped, on a device after `tokens_to`, or computed on the fly).

    Load one with `from_pretrained` (a folder or hub id), write it with `save_pretrained`.
    """

    def __init__(
        self,
        table,
        clips,
        metadata: KnowledgeBaseMetadata,
        index,
        folder: Path | None = None,
        tokens: ClipTokenStore | None = None,
        device: str | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
    ):
        self.table = table
        self.clips = clips
        self.metadata = metadata
        self.folder = folder
        self.tokens: ClipTokenStore | DeviceClipTokens | None = tokens
        self.audio_roots = {name: Path(path) for name, path in (audio_roots or {}).items()}
        self.expected_token_fingerprint: str | None = None  # the token encoder's, once `check_tokens` was called
        self._rows = None
        self._computed_tokens: dict[int, object] = {}
        self.clip_index = table.column("clip_index").to_numpy(zero_copy_only=False).astype(np.int64)
        self.is_long = clips.column("is_long").to_numpy(zero_copy_only=False).astype(bool)
        self.retriever = PairCapRetriever(
            None,
            table.column("pair_id").combine_chunks(),
            table.column("audio_id").combine_chunks(),
            table.column("caption").combine_chunks(),
            d_audio=metadata.audio_dim,
            index=index,
            device=device,
            clip_keys=self.clip_index,
        )

    # ---- loading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | os.PathLike,
        retrieval_fingerprint: str | None = None,
        revision: str | None = None,
        device: str | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
        verify: str = "once",
    ) -> PairCapKnowledgeBase:
        """
        Load a knowledge base from a local folder or a hub dataset id: the search columns straight from the parquet
        shards (no copy into the datasets cache), the clip table, the FAISS index (the one copy of the vectors; for
        `device` search they move to that device instead) and the tokens, memory-mapped. Everything is checked against
        the metadata, and `retrieval_fingerprint` (when given) against the model's retrieval CLAP. `audio_roots` map
        the clip table's root names to local folders, for tokens computed on the fly and for playing neighbours.

        The files are checked before they are read (`check_kb_files`): their sizes, the index header and structure,
        the parquet footers, then their sha256, on the first load of each file state (`verify="once"`, remembered in
        `verified_cache_dir()`) or on every load (`verify="always"`); once loaded, `SPOT_CHECK_ROWS` index vectors
        are compared with the rows' embeddings. Any mismatch is a `KnowledgeBaseError` naming the file and the check.
        """
        folder = resolve_folder(id_or_path, revision)
        metadata = KnowledgeBaseMetadata.load(folder)
        if retrieval_fingerprint is not None and metadata.retrieval_fingerprint != retrieval_fingerprint:
            raise KnowledgeBaseError(
                f"{folder}: this knowledge base was embedded in another retrieval space (CLAP fingerprint "
                f"{metadata.retrieval_fingerprint[:12]}…, the model's is {retrieval_fingerprint[:12]}…); its "
                "embeddings do not match this model's CLAP. Rebuild it with this model: "
                "paircap kb build"
            )
        shards = check_kb_files(folder, metadata, verify)
        table = read_parquet_columns(shards, SEARCH_COLUMNS)
        if table.num_rows != metadata.num_pairs:  # the footers said otherwise: the file changed while being read
            raise KnowledgeBaseError(
                f"{folder / DATA_DIR}: {table.num_rows} rows but {METADATA_FILE} records {metadata.num_pairs} "
                "(check: row count)"
            )
        clips = read_clips(folder / CLIPS_FILE, metadata.num_clips)
        index = read_index(
            folder / INDEX_FILE, metadata.num_pairs, metadata.audio_dim + metadata.text_dim, metadata.index_factory
        )
        tokens = None
        if metadata.has_tokens:
            try:
                tokens = ClipTokenStore(folder / TOKENS_FILE, num_clips=metadata.num_clips)
            except (ValueError, FileNotFoundError) as error:
                raise KnowledgeBaseError(str(error)) from None
            if tokens.fingerprint != metadata.token_fingerprint:
                raise KnowledgeBaseError(f"{folder / TOKENS_FILE}: its token fingerprint differs from {METADATA_FILE}")
        exact = stores_float32_vectors(index)
        kb = cls(table, clips, metadata, index, folder, tokens, device, audio_roots)
        spot_check_vectors(kb, shards, exact)
        return kb

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def rows(self):
        """Every row with every column as a `datasets.Dataset` (read from the shards on first use)."""
        if self._rows is None:
            table = read_parquet_columns(row_files(self.folder), ROW_COLUMNS)
            self._rows = require_datasets().Dataset(table)
        return self._rows

    # ---- search -------------------------------------------------------------------------------------------------
    def search(
        self,
        audio_embeds,
        text_embeds=None,
        mode: str = "generative_pair2pair",
        fusion_weight: float = 0.5,
        top_k: int = 5,
        exclude_ids: Sequence[Collection[str]] | None = None,
        max_pairs_per_clip: int | None = 1,
    ) -> list[list[RetrievedPair]]:
        """Batched retrieval, at most `max_pairs_per_clip` pairs of a clip per query; see `PairCapRetriever.search`."""
        return self.retriever.search(
            audio_embeds,
            text_embeds,
            mode=mode,
            fusion_weight=fusion_weight,
            top_k=top_k,
            exclude_ids=exclude_ids,
            max_pairs_per_clip=max_pairs_per_clip,
        )

    def pair_vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The float32 `[a_k ; t_k]` vectors of the given rows (read from the index or the device tensor)."""
        return self.retriever.vectors_of(np.asarray(rows, dtype=np.int64))

    # ---- tokens -------------------------------------------------------------------------------------------------
    def check_tokens(self, token_fingerprint: str) -> None:
        """Mark the stored tokens stale unless the token encoder with this fingerprint made them."""
        if token_fingerprint != self.expected_token_fingerprint:
            self._computed_tokens.clear()  # tokens computed on the fly by an earlier encoder
        self.expected_token_fingerprint = token_fingerprint

    @property
    def tokens_state(self) -> str:
        """`current`, `stale` (made by another token encoder than the one checked with `check_tokens`) or `absent`."""
        if self.tokens is None:
            return "absent"
        expected = self.expected_token_fingerprint
        return "stale" if expected is not None and expected != self.metadata.token_fingerprint else "current"

    def audio_location(self, clip: int) -> str | None:
        """Where clip `clip`'s audio is: a local path (under its root, when that root is known), a URL, or None."""
        root, path = self.clips.column("audio_root")[clip].as_py(), self.clips.column("audio_path")[clip].as_py()
        if not path:
            return None
        if not root:
            return path
        return str(self.audio_roots[root] / path) if root in self.audio_roots else None

    def clip_tokens(self, clips: Sequence[int], encoder: ClipEncoder | None = None) -> list:
        """
        The pooled tokens of the given clips: from the token file when current; otherwise encoded from the audio with
        `encoder` (the model's token encoder) and cached, when the clips' audio roots are known; else an error that
        gives the command refreshing the file.
        """
        if self.tokens_state == "current":
            return self.tokens.get(clips)
        missing = sorted({clip for clip in clips if clip not in self._computed_tokens})
        if missing:
            locations = [self.audio_location(clip) for clip in missing]
            if encoder is None or any(location is None for location in locations):
                raise KnowledgeBaseError(self._tokens_problem(missing, locations, encoder))
            encoded = encoder([{"path": location} for location in locations])
            self._computed_tokens.update(zip(missing, encoded, strict=True))
        return [self._computed_tokens[clip] for clip in clips]

    def _tokens_problem(self, clips: list[int], locations: list[str | None], encoder) -> str:
        where = self.folder or "the knowledge base"
        state = {
            "stale": "its clip tokens were made by another token encoder (e.g. before fine-tuning)",
            "absent": "it is index-only (no clip tokens)",
        }[self.tokens_state]
        unreachable = [
            self.clips.column("audio_id")[c].as_py() for c, loc in zip(clips, locations, strict=True) if not loc
        ]
        remedy = f"refresh them with: {TOKENS_COMMAND.format(folder=where)}"
        if encoder is not None and unreachable:
            roots = sorted({self.clips.column("audio_root")[c].as_py() or "(absolute)" for c in clips})
            remedy += f"; or pass audio_roots for {roots} (no audio found for {unreachable[:3]})"
        elif encoder is None:
            remedy += "; or pass audio_roots so generate encodes retrieved clips on the fly"
        return f"{where}: {state}; {remedy}"

    def examples(
        self, hits: Sequence[Sequence[RetrievedPair]], encoder: ClipEncoder | None = None, token_dim: int | None = None
    ) -> list[list[dict]]:
        """
        Each query's hits as prompt examples: `{"audio_tokens", "caption", "is_long"}`, in retrieval order. A text-only
        row gives zero tokens of width `token_dim` (default: the KB's token width).
        """
        clips = sorted({int(self.clip_index[hit.row]) for query in hits for hit in query} - {-1})
        tokens = dict(zip(clips, self.clip_tokens(clips, encoder), strict=True))
        empty = np.zeros((0, token_dim or self.metadata.token_dim or 1), dtype=np.float16)
        examples = []
        for query in hits:
            query_examples = []
            for hit in query:
                clip = int(self.clip_index[hit.row])
                query_examples.append(
                    {
                        "audio_tokens": tokens[clip] if clip >= 0 else empty,
                        "caption": hit.caption,
                        "is_long": bool(clip >= 0 and self.is_long[clip]),
                    }
                )
            examples.append(query_examples)
        return examples

    def second_pass_inputs(
        self,
        processor,
        hits: Sequence[Sequence[RetrievedPair]],
        query_tokens: Sequence,
        is_long: Sequence[bool],
        encoder: ClipEncoder | None = None,
        device=None,
    ):
        """
        The pass-2 inputs of a batch on `device` (the pattern of transformers' RAG retriever): each query's retrieved
        pairs (their clip tokens, or tokens `encoder` makes from the audio for an index-only or stale KB) and captions,
        then the query's own pooled tokens (kept where they are, e.g. on the GPU), as `input_ids`, `attention_mask`,
        `audio_tokens` and `audio_tokens_mask`.
        """
        token_dim = query_tokens[0].shape[-1] if len(query_tokens) else None
        queries = [
            {"audio_tokens": tokens.flatten(0, 1) if tokens.ndim == 3 else tokens, "is_long": long}
            for tokens, long in zip(query_tokens, is_long, strict=True)
        ]
        examples = self.examples(hits, encoder, token_dim)
        return processor(audio=queries, examples=examples, return_tensors="pt").to(device)

    def tokens_to(self, device) -> PairCapKnowledgeBase:
        """Hold every clip's tokens on `device` as one float16 tensor (total tokens x token_dim x 2 bytes)."""
        if isinstance(self.tokens, ClipTokenStore):
            self.tokens = self.tokens.to(device)
        return self

    # ---- writing ------------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, card: str | None = None) -> Path:
        """Write this knowledge base (rows, clips, index, tokens, metadata, card) to `folder`, datasets-repo layout."""
        tokens = self.tokens if isinstance(self.tokens, ClipTokenStore) else None
        return write_knowledge_base(folder, self.rows, self.clips, self.metadata, self.retriever.index, tokens, card)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Upload the folder this KB was loaded from or saved to as a hub dataset repo; returns the commit URL."""
        if self.folder is None:
            raise KnowledgeBaseError("save_pretrained(folder) first: push_to_hub uploads a knowledge base folder")
        return push_folder_to_hub(self.folder, repo_id, private=private, token=token)


class PairCapRetrievalContext:
    """
    What a model's retrieval-augmented `generate` holds besides its weights (the part transformers' RAG retriever
    plays for a RAG model): the processor that builds the pass-2 prompts, and the knowledge bases it retrieves from,
    each loaded once and checked against the model's fingerprints again whenever its encoder weights may have changed.
    """

    def __init__(self, processor: PairCapProcessor | None = None):
        self.processor = processor
        self._knowledge_bases: dict[str, tuple[PairCapKnowledgeBase, tuple]] = {}

    def require_processor(self, processor: PairCapProcessor | None = None) -> PairCapProcessor:
        """`processor`, else the one set on the model, else an error saying how to set it."""
        processor = processor or self.processor
        if processor is None:
            raise ValueError(
                "Retrieval builds the pass-2 prompts with the processor: pass processor= to generate, or set "
                "model.processor = AutoProcessor.from_pretrained(<release>, trust_remote_code=True) once"
            )
        return processor

    def knowledge_base(
        self,
        model: PairCapForConditionalGeneration,
        knowledge_base: str | os.PathLike | PairCapKnowledgeBase | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
    ) -> PairCapKnowledgeBase:
        """The knowledge base `model` retrieves from; see `PairCapForConditionalGeneration.load_knowledge_base`."""
        source = knowledge_base if knowledge_base is not None else model.config.knowledge_base
        source = bundled_source(source, str(model.name_or_path or ""))
        if source is None:
            raise ValueError(
                "No knowledge base to retrieve from: pass knowledge_base= (hub id, folder or PairCapKnowledgeBase) "
                "or set config.knowledge_base, or use retrieval_mode='none'"
            )
        key = f"object:{id(source)}" if isinstance(source, PairCapKnowledgeBase) else str(source)
        cached = self._knowledge_bases.get(key)
        state = weights_state(model.clap, model.get_audio_tower())
        if cached is not None and cached[1] == state:
            return cached[0]
        fingerprint = model.retrieval_fingerprint()
        if cached is not None or isinstance(source, PairCapKnowledgeBase):
            kb = cached[0] if cached is not None else source
            if kb.metadata.retrieval_fingerprint != fingerprint:
                raise KnowledgeBaseError(
                    f"{kb.folder or 'the knowledge base'}: embedded in another retrieval space than this model's CLAP; "
                    "its embeddings do not match. Rebuild it with this model: paircap kb build"
                )
        else:  # on a GPU the search runs there too (exact torch search); on CPU with the FAISS index
            device = str(model.device) if model.device.type == "cuda" else None
            kb = PairCapKnowledgeBase.from_pretrained(source, fingerprint, device=device, audio_roots=audio_roots)
        kb.check_tokens(model.token_fingerprint())
        self._knowledge_bases[key] = (kb, state)
        return kb


def bundled_source(source, release_folder: str):
    """A relative path that does not exist from the working directory but does inside the release folder names a
    knowledge base shipped with the release (`config.knowledge_base = "knowledge_base"`)."""
    if isinstance(source, str) and not os.path.isabs(source) and not os.path.exists(source):
        bundled = os.path.join(release_folder, source)
        if os.path.isdir(bundled):
            return bundled
    return source


def weights_state(*modules: torch.nn.Module) -> tuple:
    """Identity and in-place version of every parameter and buffer of the modules: changes whenever they may have."""
    tensors = [tensor for module in modules for tensor in (*module.parameters(), *module.buffers())]
    return tuple((id(tensor), tensor._version) for tensor in tensors)


def weights_fingerprint(module: torch.nn.Module, settings: dict) -> str:
    """SHA-256 of a module's weights, rounded to bfloat16 (so float32 and bfloat16 loads agree), and some settings:
    what a knowledge base's embeddings or tokens are valid for."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        values = tensor.detach().to("cpu")
        values = values.to(torch.bfloat16).view(torch.int16) if values.is_floating_point() else values
        digest.update(values.contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---- reading ----------------------------------------------------------------------------------------------------
def row_files(folder: Path) -> list[str]:
    """The parquet shards of a knowledge base folder (`check_kb_files` refuses shards its metadata does not record)."""
    files = sorted(str(path) for path in (folder / DATA_DIR).glob("*.parquet"))
    if not files:
        raise KnowledgeBaseError(f"{folder / DATA_DIR}: no parquet shards; not a PairCap knowledge base folder")
    return files


def read_parquet_columns(files: Sequence[str], columns: Sequence[str]):
    """Some columns of parquet files as one Arrow table, with an error naming a file that lacks one."""
    require_datasets()
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, columns=list(columns), memory_map=True))
        except (pa.ArrowException, KeyError, OSError) as error:
            raise KnowledgeBaseError(f"{file}: cannot read the columns {list(columns)} ({error})") from None
    return pa.concat_tables(tables)


def parquet_footer(path: str | os.PathLike):
    """The footer metadata of a parquet file (row counts, row groups, schema), read without its columns."""
    require_datasets()
    try:
        return pq.read_metadata(str(path))
    except (pa.ArrowException, OSError) as error:
        raise KnowledgeBaseError(
            f"{path}: not a readable parquet file (truncated or corrupt? {error}) (check: parquet footer)"
        ) from None


def check_parquet_columns(path: str | os.PathLike, footer, columns: Sequence[str], widths: Mapping[str, int]) -> None:
    """The footer's schema holds `columns`, the fixed-size list columns in `widths` of that width."""
    try:
        schema = footer.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as error:
        raise KnowledgeBaseError(f"{path}: unreadable schema ({error}) (check: parquet schema)") from None
    missing = [column for column in columns if column not in schema.names]
    if missing:
        raise KnowledgeBaseError(f"{path}: lacks the columns {missing} (check: parquet schema)")
    for column, width in widths.items():
        kind = schema.field(column).type
        found = kind.list_size if pa.types.is_fixed_size_list(kind) else None
        if found != width:
            raise KnowledgeBaseError(
                f"{path}: {column} holds vectors of width {found}, {METADATA_FILE} records {width} (check: parquet "
                "schema)"
            )


def read_clips(path: Path, num_clips: int):
    """The clip table, its row count checked in the footer against the metadata's clip count before it is read."""
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: missing; a PairCap knowledge base folder holds {CLIPS_FILE}")
    footer = parquet_footer(path)
    check_parquet_columns(path, footer, CLIP_COLUMNS, {})
    if footer.num_rows != num_clips:
        raise KnowledgeBaseError(
            f"{path}: {footer.num_rows} clips but {METADATA_FILE} records {num_clips} (check: row count)"
        )
    clips = read_parquet_columns([str(path)], CLIP_COLUMNS)
    if clips.num_rows != num_clips:
        raise KnowledgeBaseError(f"{path}: {clips.num_rows} clips but {METADATA_FILE} records {num_clips}")
    return clips


# ---- checking the files before they are read --------------------------------------------------------------------
def kb_file_names(folder: Path, metadata: KnowledgeBaseMetadata) -> list[str]:
    """The files of `folder` that its metadata records: the row shards, the clip table, the index and the tokens."""
    shards = [Path(shard).relative_to(folder).as_posix() for shard in row_files(folder)]
    return [*shards, CLIPS_FILE, INDEX_FILE] + ([TOKENS_FILE] if metadata.has_tokens else [])


def check_kb_files(folder: Path, metadata: KnowledgeBaseMetadata, verify: str = "once") -> list[str]:
    """
    Check a knowledge base folder's files against its metadata before any of them is read, cheapest check first, and
    return its row shards. With a `files` record: no file missing, no shard unrecorded, every size as recorded
    (os.stat). Always: the row counts and embedding widths in the parquet footers, and the index header and structure
    against the metadata (`check_index_file`). With a record: the sha256 of every file whose current state (device,
    inode, size, mtime, ctime) was not verified before (`verify="once"`), or of every file (`verify="always"`).
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    shards = row_files(folder)
    if metadata.files:
        check_recorded_files(folder, metadata, shards)
    elif str(folder) not in _warned_unverified:
        _warned_unverified.add(str(folder))
        logger.warning(
            "%s: %s records no sizes or sha256 of its files (written before they were recorded), so they are checked "
            "for structure only and not verified. Record them with: %s",
            folder,
            METADATA_FILE,
            RECORD_COMMAND.format(folder=str(folder)),
        )
    widths = {"audio_embedding": metadata.audio_dim, "text_embedding": metadata.text_dim}
    total = 0
    for shard in shards:
        footer = parquet_footer(shard)
        check_parquet_columns(shard, footer, ROW_COLUMNS, widths)
        total += footer.num_rows
    if total != metadata.num_pairs:
        raise KnowledgeBaseError(
            f"{folder / DATA_DIR}: {total} rows but {METADATA_FILE} records {metadata.num_pairs} (check: row count, "
            "from the parquet footers)"
        )
    if (folder / CLIPS_FILE).is_file():
        footer = parquet_footer(folder / CLIPS_FILE)
        if footer.num_rows != metadata.num_clips:
            raise KnowledgeBaseError(
                f"{folder / CLIPS_FILE}: {footer.num_rows} clips but {METADATA_FILE} records {metadata.num_clips} "
                "(check: row count)"
            )
    check_index_file(
        folder / INDEX_FILE, metadata.num_pairs, metadata.audio_dim + metadata.text_dim, metadata.index_factory
    )
    if metadata.files:
        verify_hashes(folder, metadata.files, always=verify == "always")
    return shards


def check_recorded_files(folder: Path, metadata: KnowledgeBaseMetadata, shards: Sequence[str]) -> None:
    """The folder holds exactly the recorded files (no shard more or less), each of its recorded size."""
    recorded = metadata.files
    for shard in shards:
        name = Path(shard).relative_to(folder).as_posix()
        if name not in recorded:
            raise KnowledgeBaseError(
                f"{shard}: a row shard that {METADATA_FILE} does not record (from another build?); remove it or "
                "rebuild the KB (check: file list)"
            )
    expected = {CLIPS_FILE, INDEX_FILE} | ({TOKENS_FILE} if metadata.has_tokens else set())
    unrecorded = sorted(expected - set(recorded))
    if unrecorded or not any(name.startswith(f"{DATA_DIR}/") for name in recorded):
        raise KnowledgeBaseError(
            f"{folder / METADATA_FILE}: its file record lacks {unrecorded or 'the row shards'} (check: file list)"
        )
    for name, record in recorded.items():
        path = folder / name
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise KnowledgeBaseError(
                f"{path}: missing, though {METADATA_FILE} records it; re-download or rebuild the KB (check: file list)"
            ) from None
        if size != record["size"]:
            raise KnowledgeBaseError(
                f"{path}: {size} bytes, {METADATA_FILE} records {record['size']} (truncated, appended to or replaced?) "
                "(check: size)"
            )


def verified_cache_dir() -> Path:
    """
    Where verified file states are remembered, one small JSON file per KB folder: `$PAIRCAP_VERIFIED_CACHE`, else
    `$HF_HOME/paircap/verified-kb-files` (HF_HOME defaulting as in huggingface_hub).
    """
    explicit = os.environ.get(VERIFIED_CACHE_ENV)
    if explicit:
        return Path(explicit)
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    return Path(home) / "paircap" / "verified-kb-files"


class VerifiedFiles:
    """
    The file states of one KB folder whose sha256 matched its record: a file counts as verified while its device,
    inode, size, mtime and ctime are those it had when it was hashed (any write or replacement changes them). A file
    modified less than `RACY_NS` before it was hashed is not remembered (file times are coarse: a write in the same
    tick would leave them unchanged), nor anything where the cache cannot be written.
    """

    def __init__(self, folder: Path):
        self.folder = str(folder.resolve())
        key = hashlib.sha256(self.folder.encode()).hexdigest()[:32]
        self.path = verified_cache_dir() / f"{key}.json"
        self.entries: dict[str, list] = {}
        try:
            if self.path.stat().st_size <= MAX_METADATA_BYTES:
                values = json.loads(self.path.read_text())
                if isinstance(values, dict) and values.get("folder") == self.folder:
                    self.entries = dict(values.get("files", {}))
        except (OSError, ValueError):
            pass

    @staticmethod
    def state(stat: os.stat_result, sha256: str) -> list:
        return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, sha256]

    def verified(self, name: str, stat: os.stat_result, sha256: str) -> bool:
        return self.entries.get(name) == self.state(stat, sha256)

    def add(self, name: str, stat: os.stat_result, sha256: str, hashed_at_ns: int) -> None:
        if hashed_at_ns - max(stat.st_mtime_ns, stat.st_ctime_ns) > RACY_NS:
            self.entries[name] = self.state(stat, sha256)

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({"folder": self.folder, "files": self.entries}))
            os.replace(partial, self.path)
        except OSError as error:  # a read-only cache: every load hashes
            logger.debug("cannot remember verified KB files in %s (%s)", self.path, error)


def verify_hashes(folder: Path, records: Mapping[str, dict], always: bool = False) -> None:
    """Hash the recorded files (those not verified in their current state, unless `always`) and compare."""
    cache = VerifiedFiles(folder)
    stats = {name: os.stat(folder / name) for name in records}
    todo = [n for n in records if always or not cache.verified(n, stats[n], records[n]["sha256"])]
    if not todo:
        return
    hashed_at = time.time_ns()
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1, len(todo)))) as pool:
        digests = dict(zip(todo, pool.map(lambda name: file_sha256(folder / name), todo), strict=True))
    for name in todo:
        expected = records[name]["sha256"]
        if digests[name] != expected:
            raise KnowledgeBaseError(
                f"{folder / name}: sha256 {digests[name][:16]}… but {METADATA_FILE} records {expected[:16]}…: its "
                "bytes changed since the KB was written; re-download or rebuild it (check: sha256)"
            )
        cache.add(name, stats[name], expected, hashed_at)
    cache.save()


# ---- the FAISS index file ---------------------------------------------------------------------------------------
# Float index types of faiss's index_io, each starting with its common header (d, ntotal, 2 dummies, is_trained,
# metric); the structure is parsed fully for those holding the vectors as float32 (flat, IVF-flat, HNSW-flat).
FLAT_TYPES = ("IxFI", "IxF2", "IxFl")
EXACT_TYPES = (*FLAT_TYPES, "IwFl", "IHNf")
HEADER_TYPES = frozenset(
    (
        *EXACT_TYPES,
        "IxHE",
        "IxHe",
        "IxPQ",
        "IxPo",
        "IxPq",
        "IxRQ",
        "IxRq",
        "IxLS",
        "IxPR",
        "IxPL",
        "ImRQ",
        "ILfs",
        "IRfs",
        "IPRf",
        "IPLf",
        "IVLf",
        "IVRf",
        "NPLf",
        "NPRf",
        "IvFl",
        "IvFL",
        "IwFd",
        "IxSQ",
        "IvSQ",
        "IwSQ",
        "IwSq",
        "IwLS",
        "IwRQ",
        "IwPL",
        "IwPR",
        "IwSh",
        "IvPQ",
        "IvQR",
        "IwPQ",
        "IwQR",
        "IwIQ",
        "IxPT",
        "Imiq",
        "IxRF",
        "IxMp",
        "IxM2",
        "Ix2L",
        "IHNp",
        "IHNs",
        "IHN2",
        "IHNc",
        "INSf",
        "INSp",
        "INSs",
        "INNf",
        "IPfs",
        "IwPf",
        "IRMf",
        "IRMh",
    )
)
TYPE_NAMES = {"IxFI": "flat", "IxF2": "flat (L2)", "IxFl": "flat", "IwFl": "IVF-flat", "IHNf": "HNSW-flat"}
METRIC_INNER_PRODUCT = 0


@dataclass
class IndexFileHeader:
    """What the header of a FAISS index file says (see faiss/impl/index_read.cpp, `read_index_header`)."""

    kind: str  # the fourcc, e.g. IxFI (flat, inner product), IwFl (IVF-flat), IHNf (HNSW-flat)
    dim: int
    ntotal: int
    metric: int
    nlist: int | None = None


class _IndexFileReader:
    """Reads faiss's index_io fields from a file, refusing any announced length that does not fit the file."""

    def __init__(self, handle, size: int, path: Path):
        self.handle, self.size, self.path, self.pos = handle, size, path, 0

    def fail(self, detail: str) -> KnowledgeBaseError:
        return KnowledgeBaseError(
            f"{self.path}: not a readable FAISS index (corrupt or truncated? {detail}) (check: index structure)"
        )

    def take(self, count: int, what: str) -> bytes:
        if count > self.size - self.pos:
            raise self.fail(f"{what} needs {count} bytes at offset {self.pos}, the file has {self.size}")
        data = self.handle.read(count)
        self.pos += count
        return data

    def number(self, code: str, what: str) -> int:
        return struct.unpack("<" + code, self.take(struct.calcsize(code), what))[0]

    def fourcc(self, what: str) -> str:
        return self.take(4, what).decode("latin-1")

    def vector(self, item_bytes: int, what: str, expected: int | None = None, read: bool = False):
        """A `size_t` length then that many items: its length checked against the bytes left (and `expected`)."""
        count = self.number("Q", f"the length of {what}")
        if count * item_bytes > self.size - self.pos:
            raise self.fail(
                f"{what}: {count} items ({count * item_bytes} bytes) announced at offset {self.pos - 8}, only "
                f"{self.size - self.pos} bytes follow"
            )
        if expected is not None and count != expected:
            raise self.fail(f"{what}: {count} items, the header implies {expected}")
        if read:
            return np.frombuffer(self.take(count * item_bytes, what), dtype=f"<u{item_bytes}")
        self.skip(count * item_bytes, what)
        return count

    def skip(self, count: int, what: str) -> None:
        if count > self.size - self.pos:
            raise self.fail(f"{what} needs {count} bytes at offset {self.pos}, the file has {self.size}")
        self.pos += count
        self.handle.seek(self.pos)

    def header(self) -> IndexFileHeader:
        kind = self.fourcc("the index type")
        if kind not in HEADER_TYPES:
            raise self.fail(f"unknown index type {kind!r}")
        dim, ntotal = self.number("i", "the dimension"), self.number("q", "the vector count")
        self.skip(16 + 1, "the header")  # two dummy int64, is_trained
        metric = self.number("i", "the metric")
        if metric > 1:
            self.skip(4, "the metric argument")
        if dim <= 0 or ntotal < 0:
            raise self.fail(f"dimension {dim}, vector count {ntotal}")
        return IndexFileHeader(kind, dim, ntotal, metric)

    def body(self, header: IndexFileHeader) -> bool:
        """Parse the rest of an index of the types holding float32 vectors; False for other types (not parsed)."""
        d, n = header.dim, header.ntotal
        if header.kind in FLAT_TYPES:
            self.vector(4, "the flat index's vectors", expected=n * d)
        elif header.kind == "IwFl":
            nlist, _nprobe = self.number("Q", "nlist"), self.number("Q", "nprobe")
            quantizer = self.header()
            if quantizer.kind not in FLAT_TYPES or quantizer.dim != d or quantizer.ntotal != nlist:
                raise self.fail(f"the IVF quantizer is {quantizer}, expected a flat index of {nlist} x {d}")
            self.body(quantizer)
            direct_map = self.number("B", "the direct map type")
            self.vector(8, "the direct map")
            if direct_map == 2:
                self.vector(16, "the direct map's hash table")
            self.inverted_lists(nlist, d * 4, n)
            header.nlist = nlist
        elif header.kind == "IHNf":
            self.vector(8, "the HNSW level probabilities")
            self.vector(4, "the HNSW neighbours per level")
            self.vector(4, "the HNSW levels", expected=n)
            self.vector(8, "the HNSW offsets", expected=n + 1)
            self.vector(4, "the HNSW neighbours")
            self.skip(5 * 4, "the HNSW parameters")
            storage = self.header()
            if storage.kind not in FLAT_TYPES or storage.dim != d or storage.ntotal != n:
                raise self.fail(f"the HNSW storage is {storage}, expected a flat index of {n} x {d}")
            self.body(storage)
        else:
            return False
        return True

    def inverted_lists(self, nlist: int, code_size: int, ntotal: int) -> None:
        kind = self.fourcc("the inverted lists type")
        if kind != "ilar":
            raise self.fail(f"inverted lists of type {kind!r}, expected array lists (ilar)")
        lists, size = self.number("Q", "the inverted lists' nlist"), self.number("Q", "the code size")
        if lists != nlist or size != code_size:
            raise self.fail(f"inverted lists of {lists} lists x {size} bytes, the index has {nlist} x {code_size}")
        layout = self.fourcc("the inverted lists layout")
        if layout == "full":
            sizes = self.vector(8, "the list sizes", expected=nlist, read=True)
        elif layout == "sprs":
            pairs = self.vector(8, "the sparse list sizes", read=True)
            if len(pairs) % 2 or (len(pairs) and pairs[0::2].max() >= nlist):
                raise self.fail("malformed sparse list sizes")
            sizes = pairs[1::2]
        else:
            raise self.fail(f"inverted lists layout {layout!r}")
        left = self.size - self.pos
        if len(sizes) and int(sizes.max()) > left // (code_size + 8):
            raise self.fail(f"a list announces {int(sizes.max())} vectors, only {left} bytes follow")
        total = int(sizes.sum())
        if total != ntotal:
            raise self.fail(f"the inverted lists hold {total} vectors, the header {ntotal}")
        self.skip(total * (code_size + 8), "the inverted lists' codes and ids")


def _expected_index_kind(factory: str | None) -> tuple[str | None, int | None]:
    """The fourcc (and IVF nlist) the writer produces for an inner-product index of this factory string."""
    if factory is None:
        return None, None
    if factory == "Flat":
        return "IxFI", None
    if match := re.fullmatch(r"IVF(\d+),Flat", factory):
        return "IwFl", int(match.group(1))
    if re.fullmatch(r"HNSW\d+(,Flat)?", factory):
        return "IHNf", None
    return None, None


def check_index_file(
    path: str | os.PathLike, num_vectors: int, dim: int, factory: str | None = None
) -> IndexFileHeader:
    """The index file's header and structure against the KB (count, dimension, metric, type), before faiss reads it."""
    path = Path(path)
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: the FAISS index file is missing; rebuild it with paircap kb build")
    header = _read_index_header(path, num_vectors, dim)
    kind, nlist = _expected_index_kind(factory)
    if kind is not None and (header.kind != kind or (nlist is not None and header.nlist != nlist)):
        found = f"{TYPE_NAMES.get(header.kind, 'faiss')} ({header.kind})"
        found += f" with {header.nlist} lists" if header.nlist is not None else ""
        raise KnowledgeBaseError(
            f"{path}: the index is {found}, {METADATA_FILE} records index_factory {factory!r} (check: index header)"
        )
    return header


def _read_index_header(path: Path, num_vectors: int, dim: int) -> IndexFileHeader:
    """
    Read the header and compare it with the KB first (the clearest message), then, for a flat, IVF-flat or HNSW-flat
    index, its structure: every announced length fits the file and agrees with the header, and the file ends where
    the index does. Reads only the small fields (tens of bytes; nlist x 8 for IVF); other types rely on the sha256.
    """
    size = os.stat(path).st_size
    with open(path, "rb") as handle:
        reader = _IndexFileReader(handle, size, path)
        header = reader.header()
        if header.ntotal != num_vectors:
            raise KnowledgeBaseError(
                f"{path}: the index has {header.ntotal} vectors but the KB has {num_vectors} rows (check: index header)"
            )
        if header.dim != dim:
            raise KnowledgeBaseError(
                f"{path}: the index has dimension {header.dim}, the KB's embeddings {dim} (check: index header)"
            )
        if header.metric != METRIC_INNER_PRODUCT:
            raise KnowledgeBaseError(f"{path}: the index must use the inner-product metric (check: index header)")
        if reader.body(header) and reader.pos != size:
            raise reader.fail(f"{size - reader.pos} bytes follow the end of the index at offset {reader.pos}")
    return header


def read_index(path: str | os.PathLike, num_vectors: int, dim: int, factory: str | None = None):
    """
    Read a FAISS index file and check it against the knowledge base it belongs to (vector count, dimension,
    inner-product metric, and the type `factory` makes), with errors naming the file. The one index reader of the
    project: the header and structure are checked (`check_index_file`) before faiss reads and allocates.
    """
    faiss = require_faiss()
    path = Path(path)
    check_index_file(path, num_vectors, dim, factory)
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise KnowledgeBaseError(f"{path}: not a readable FAISS index (corrupt or truncated? {reason})") from None
    if index.ntotal != num_vectors:
        raise KnowledgeBaseError(f"{path}: the index has {index.ntotal} vectors but the KB has {num_vectors} rows")
    if index.d != dim:
        raise KnowledgeBaseError(f"{path}: the index has dimension {index.d}, the KB's embeddings {dim}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise KnowledgeBaseError(f"{path}: the index must use the inner-product metric")
    return index


def write_index(index, path: str | os.PathLike) -> None:
    """Write a FAISS index file through Python's checked writes (`write_stream`): faiss's own file writer reports a
    failed final flush only on stderr, so a full disk would leave a short index behind a successful call."""
    faiss = require_faiss()
    write_stream(path, lambda write: faiss.write_index(index, faiss.PyCallbackIOWriter(write)))


def stores_float32_vectors(index) -> bool:
    """Whether the index reconstructs its vectors exactly (flat storage), as flat, IVF-flat and HNSW-flat do."""
    if index is None:
        return False
    faiss = require_faiss()
    return isinstance(faiss.downcast_index(index), (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexHNSWFlat))


def spot_check_vectors(kb: PairCapKnowledgeBase, shards: Sequence[str], exact: bool) -> None:
    """
    Compare up to `SPOT_CHECK_ROWS` vectors of the loaded index with the rows' own `[audio_embedding ;
    text_embedding]` (the parquet shards hold a second copy): the first rows of up to `SPOT_CHECK_GROUPS` row groups
    spread over the KB (deterministic; a few ms). An index with float32 storage must reproduce them exactly; a lossy one
    (PQ, SQ) must give finite vectors within the norm of the row's vector of it.
    """
    groups = []
    start = 0
    for shard in shards:
        footer = parquet_footer(shard)
        for group in range(footer.num_row_groups):
            rows = footer.row_group(group).num_rows
            if rows:
                groups.append((shard, group, start, rows))
            start += rows
    if not groups:
        return
    chosen = sorted({round(i * (len(groups) - 1) / max(1, SPOT_CHECK_GROUPS - 1)) for i in range(SPOT_CHECK_GROUPS)})
    per_group = -(-SPOT_CHECK_ROWS // len(chosen))
    index_path = (kb.folder or Path(".")) / INDEX_FILE
    for shard, group, first, rows in (groups[i] for i in chosen):
        try:
            batch = next(
                pq.ParquetFile(shard, memory_map=True).iter_batches(
                    batch_size=min(per_group, rows), row_groups=[group], columns=["audio_embedding", "text_embedding"]
                )
            )
        except (pa.ArrowException, OSError, StopIteration) as error:
            raise KnowledgeBaseError(f"{shard}: cannot read row group {group} ({error}) (check: spot-check)") from None
        part = pa.Table.from_batches([batch])
        expected = np.concatenate(
            [PairVectorView._matrix(part, name) for name in ("audio_embedding", "text_embedding")], 1
        )
        found = kb.pair_vectors(np.arange(first, first + len(expected)))
        bad = ~np.isfinite(found).all(axis=1)
        if exact:
            bad |= ~(np.abs(found - expected) <= SPOT_CHECK_TOLERANCE).all(axis=1)
        else:
            bad |= np.linalg.norm(found - expected, axis=1) > np.linalg.norm(expected, axis=1) + 1e-3
        if bad.any():
            row = int(first + np.flatnonzero(bad)[0])
            with np.errstate(invalid="ignore"):
                difference = float(np.abs(found[bad] - expected[bad]).max())
            raise KnowledgeBaseError(
                f"{index_path}: the vector of row {row} differs from its embeddings in {shard} (max |difference| "
                f"{difference:.3g}, in {int(bad.sum())} of the {len(bad)} rows compared there) (check: spot-check)"
            )


class PairVectorView:
    """
    The rows' `[audio_embedding ; text_embedding]` vectors, read from Arrow a slice (or a set of rows) at a time: what
    `build_index` and `recall_at_k` need of an array, without the (N, d) matrix in memory next to the index.
    """

    def __init__(self, rows):
        self.table = (rows.flatten_indices() if rows._indices is not None else rows).data.table
        self.audio_dim = self.table.schema.field("audio_embedding").type.list_size
        self.shape = (self.table.num_rows, self.audio_dim + self.table.schema.field("text_embedding").type.list_size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        part = self.table.slice(key.start, key.stop - key.start) if isinstance(key, slice) else self.table.take(key)
        audio, text = (self._matrix(part, name) for name in ("audio_embedding", "text_embedding"))
        return np.concatenate([audio, text], axis=1)

    @staticmethod
    def _matrix(part, name: str) -> np.ndarray:
        column = part.column(name).combine_chunks()
        return np.asarray(column.flatten(), dtype=np.float32).reshape(len(column), column.type.list_size)


def embedding_matrix(rows, column: str) -> np.ndarray:
    """A fixed-length list column as a float32 `(rows, dim)` matrix, read from Arrow without Python objects."""
    table = rows.flatten_indices() if rows._indices is not None else rows
    values = table.data.column(column).combine_chunks()
    return np.asarray(values.values, dtype=np.float32).reshape(len(rows), values.type.list_size)


# ---- writing ----------------------------------------------------------------------------------------------------
def write_knowledge_base(
    folder: str | os.PathLike,
    rows,
    clips,
    metadata: KnowledgeBaseMetadata,
    index=None,
    tokens: ClipTokenStore | None = None,
    card: str | Callable[[KnowledgeBaseMetadata], str] | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """
    Write `folder` in datasets-repo layout: `data/train-<build>-*.parquet` (ROW_COLUMNS, shards of about
    `max_shard_bytes`), `clips.parquet`, the FAISS index (flat from the rows when not given), `paircap_kb.json`, and
    README.md: `card`, the card made from the final metadata when `card` is a function, or a minimal card. `tokens` is
    a token file to link or copy in (an index-only KB has none; without it, the token file of the KB in `folder` is
    kept). Each write gets a new build id in its shard names and card: datasets 5 caches a local folder by its
    `configs` patterns alone, so without it a KB rebuilt in place would load its previous rows.

    Whole or not at all: the folder is staged beside `folder`, every write checked (the index too, see
    `write_index`), loaded back with `PairCapKnowledgeBase.from_pretrained`, then swapped in (`replacing_folder`). A
    full disk or any other failure leaves the KB in `folder` as it was (a `FolderWriteError` for an OSError); a second
    writer of `folder` is refused, and so is a non-empty `folder` that is not a knowledge base.
    """
    require_datasets()
    missing = [column for column in ROW_COLUMNS if column not in rows.column_names]
    if missing:
        raise ValueError(f"the rows lack the knowledge base columns {missing}")
    folder = Path(folder)
    rows = rows.select_columns(list(ROW_COLUMNS))
    with replacing_folder(folder, marker=METADATA_FILE) as staging:
        (staging / DATA_DIR).mkdir()
        metadata.build_id = uuid.uuid4().hex[:12]
        num_shards = max(1, -(-rows.data.nbytes // max_shard_bytes))
        for shard in range(num_shards):
            name = f"train-{metadata.build_id}-{shard:05d}-of-{num_shards:05d}.parquet"
            rows.shard(num_shards, shard, contiguous=True).to_parquet(str(staging / DATA_DIR / name))
        pq.write_table(clips.select(list(CLIP_COLUMNS)).cast(clip_schema()), staging / CLIPS_FILE)
        if index is None:
            vectors = PairVectorView(rows)
            chunks = (vectors[start : start + 65536] for start in range(0, len(vectors), 65536))
            index = flat_index(*vectors.shape, chunks)
        write_index(index, staging / INDEX_FILE)
        if tokens is not None:
            link_or_copy(tokens.path, staging / TOKENS_FILE)
        elif metadata.has_tokens:
            if not (folder / TOKENS_FILE).is_file():
                raise ValueError(
                    f"metadata records clip tokens but {folder / TOKENS_FILE} is missing, and none was given"
                )
            link_or_copy(folder / TOKENS_FILE, staging / TOKENS_FILE)
        metadata.num_pairs, metadata.num_clips = len(rows), clips.num_rows
        metadata.files = record_files(staging, kb_file_names(staging, metadata))
        metadata.save(staging)
        text = card(metadata) if callable(card) else minimal_card(metadata) if card is None else card
        (staging / "README.md").write_text(text, encoding="utf-8", newline="")
        PairCapKnowledgeBase.from_pretrained(staging, verify="always")
    return folder


def record_file_hashes(folder: str | os.PathLike) -> KnowledgeBaseMetadata:
    """
    Record the sizes and sha256 of the files of a KB written before they were recorded, in place: the KB is loaded
    first (every structural check, the row counts and the spot-check must pass), then its files are hashed into its
    metadata. A KB whose record exists is verified against it, then recorded again (unchanged).
    """
    folder = Path(folder)
    PairCapKnowledgeBase.from_pretrained(folder, verify="always")
    metadata = KnowledgeBaseMetadata.load(folder)
    metadata.files = record_files(folder, kb_file_names(folder, metadata))
    metadata.save(folder)
    _warned_unverified.discard(str(folder))
    return metadata


def minimal_card(metadata: KnowledgeBaseMetadata) -> str:
    """A dataset card whose YAML `configs` make `load_dataset(folder)` return the rows of this build."""
    return (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        f"    path: {DATA_DIR}/train-{metadata.build_id}-*.parquet\ntags:\n- paircap\n---\n\n"
        f"# PairCap knowledge base\n\n{metadata.num_pairs} (audio, caption) pairs over {metadata.num_clips} clips.\n"
    )


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a knowledge base folder (rows, clips, index, tokens, metadata, card) as a dataset repo."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="Upload PairCap knowledge base"
    )
    return str(commit)
