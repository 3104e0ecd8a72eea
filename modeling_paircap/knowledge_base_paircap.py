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
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .retrieval_paircap import PairCapRetriever, RetrievedPair, flat_index, require_faiss
from .tokens_paircap import TOKENS_FILE, ClipTokenStore, DeviceClipTokens

try:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the knowledge base needs `datasets` (and its pyarrow); plain captioning does not
    datasets = pa = pq = None

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

UPGRADE_COMMAND = "python -m datasets_scripts upgrade --kb {folder} --model RELEASE"
TOKENS_COMMAND = "python -m datasets_scripts tokens --kb {folder} --model RELEASE --root NAME=DIR ..."


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
    format_version: int = KB_FORMAT_VERSION

    @property
    def has_tokens(self) -> bool:
        return self.token_fingerprint is not None

    def save(self, folder: str | os.PathLike) -> None:
        Path(folder, METADATA_FILE).write_text(json.dumps(self.__dict__, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> KnowledgeBaseMetadata:
        path = Path(folder, METADATA_FILE)
        if not path.is_file():
            raise KnowledgeBaseError(f"{path}: missing; a PairCap knowledge base folder holds {METADATA_FILE}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise KnowledgeBaseError(f"{path}: not a valid PairCap knowledge base metadata file ({error})") from None
        version = values.get("format_version") if isinstance(values, dict) else None
        if version != KB_FORMAT_VERSION:
            raise KnowledgeBaseError(
                f"{path}: knowledge base format {version}, this code reads format {KB_FORMAT_VERSION}. "
                + (
                    f"Convert it in place with: {UPGRADE_COMMAND.format(folder=folder)}"
                    if version == 1
                    else "Rebuild it with python -m datasets_scripts build"
                )
            )
        try:
            return cls(**values)
        except TypeError as error:
            raise KnowledgeBaseError(f"{path}: not a valid PairCap knowledge base metadata file ({error})") from None


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
            "Pass a local knowledge base folder instead (one built with `python -m datasets_scripts`)."
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
    ) -> PairCapKnowledgeBase:
        """
        Load a knowledge base from a local folder or a hub dataset id: the search columns straight from the parquet
        shards (no copy into the datasets cache), the clip table, the FAISS index (the one copy of the vectors; for
        `device` search they move to that device instead) and the tokens, memory-mapped. Everything is checked against
        the metadata, and `retrieval_fingerprint` (when given) against the model's retrieval CLAP. `audio_roots` map
        the clip table's root names to local folders, for tokens computed on the fly and for playing neighbours.
        """
        folder = resolve_folder(id_or_path, revision)
        metadata = KnowledgeBaseMetadata.load(folder)
        if retrieval_fingerprint is not None and metadata.retrieval_fingerprint != retrieval_fingerprint:
            raise KnowledgeBaseError(
                f"{folder}: this knowledge base was embedded in another retrieval space (CLAP fingerprint "
                f"{metadata.retrieval_fingerprint[:12]}…, the model's is {retrieval_fingerprint[:12]}…); its "
                "embeddings do not match this model's CLAP. Rebuild it with this model: "
                "python -m datasets_scripts build"
            )
        table = read_parquet_columns(row_files(folder), SEARCH_COLUMNS)
        if table.num_rows != metadata.num_pairs:
            raise KnowledgeBaseError(
                f"{folder}: {table.num_rows} rows but {METADATA_FILE} records {metadata.num_pairs}"
            )
        clips = read_clips(folder / CLIPS_FILE, metadata.num_clips)
        index = read_index(folder / INDEX_FILE, metadata.num_pairs, metadata.audio_dim + metadata.text_dim)
        tokens = None
        if metadata.has_tokens:
            try:
                tokens = ClipTokenStore(folder / TOKENS_FILE, num_clips=metadata.num_clips)
            except (ValueError, FileNotFoundError) as error:
                raise KnowledgeBaseError(str(error)) from None
            if tokens.fingerprint != metadata.token_fingerprint:
                raise KnowledgeBaseError(f"{folder / TOKENS_FILE}: its token fingerprint differs from {METADATA_FILE}")
        return cls(table, clips, metadata, index, folder, tokens, device, audio_roots)

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


# ---- reading ----------------------------------------------------------------------------------------------------
def row_files(folder: Path) -> list[str]:
    """The parquet shards of a knowledge base folder whose build id matches its metadata."""
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
        except (pa.ArrowInvalid, KeyError, OSError) as error:
            raise KnowledgeBaseError(f"{file}: cannot read the columns {list(columns)} ({error})") from None
    return pa.concat_tables(tables)


def read_clips(path: Path, num_clips: int):
    """The clip table, checked against the metadata's clip count."""
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: missing; a PairCap knowledge base folder holds {CLIPS_FILE}")
    clips = read_parquet_columns([str(path)], CLIP_COLUMNS)
    if clips.num_rows != num_clips:
        raise KnowledgeBaseError(f"{path}: {clips.num_rows} clips but {METADATA_FILE} records {num_clips}")
    return clips


def read_index(path: str | os.PathLike, num_vectors: int, dim: int):
    """
    Read a FAISS index file and check it against the knowledge base it belongs to (vector count, dimension,
    inner-product metric), with errors naming the file. The one index reader of the project.
    """
    faiss = require_faiss()
    path = Path(path)
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: the FAISS index file is missing; rebuild it with python -m datasets_scripts")
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
    card: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> Path:
    """
    Write `folder` in datasets-repo layout: `data/train-<build>-*.parquet` (ROW_COLUMNS, shards of about
    `max_shard_bytes`), `clips.parquet`, the FAISS index (flat from the rows when not given), `paircap_kb.json`, and
    `card` (or a minimal card) as README.md. `tokens` is a token file to copy in (an index-only KB has none; a token
    file already at `folder/tokens.safetensors` is kept). Each write gets a new build id in its shard names and card:
    datasets 5 caches a local folder by its `configs` patterns alone, so without it a KB rebuilt in place would load
    its previous rows.
    """
    require_datasets()
    missing = [column for column in ROW_COLUMNS if column not in rows.column_names]
    if missing:
        raise ValueError(f"the rows lack the knowledge base columns {missing}")
    folder = Path(folder)
    data_dir = folder / DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    old_shards = list(data_dir.glob("*.parquet"))
    rows = rows.select_columns(list(ROW_COLUMNS))
    metadata.build_id = uuid.uuid4().hex[:12]
    num_shards = max(1, -(-rows.data.nbytes // max_shard_bytes))
    for shard in range(num_shards):
        part = rows.shard(num_shards, shard, contiguous=True)
        part.to_parquet(str(data_dir / f"train-{metadata.build_id}-{shard:05d}-of-{num_shards:05d}.parquet"))
    for old in old_shards:
        old.unlink()
    pq.write_table(clips.select(list(CLIP_COLUMNS)).cast(clip_schema()), folder / CLIPS_FILE)
    if index is None:
        vectors = PairVectorView(rows)
        chunks = (vectors[start : start + 65536] for start in range(0, len(vectors), 65536))
        index = flat_index(*vectors.shape, chunks)
    partial = folder / f".{INDEX_FILE}.tmp"
    require_faiss().write_index(index, str(partial))
    os.replace(partial, folder / INDEX_FILE)
    token_path = folder / TOKENS_FILE
    if tokens is not None and tokens.path.resolve() != token_path.resolve():
        shutil.copyfile(tokens.path, token_path)
    elif tokens is None and metadata.has_tokens and not token_path.is_file():
        raise ValueError(f"metadata records clip tokens but {token_path} is missing and no token file was given")
    elif not metadata.has_tokens:
        token_path.unlink(missing_ok=True)
    metadata.num_pairs, metadata.num_clips = len(rows), clips.num_rows
    metadata.save(folder)
    (folder / "README.md").write_text(card if card is not None else minimal_card(metadata))
    return folder


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
