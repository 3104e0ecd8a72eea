"""The PairCap knowledge-base format: a datasets repo of (audio, caption) pairs with their CLAP embeddings and a FAISS
index over `[audio_embedding ; text_embedding]`, and, once per clip, where its audio lives and its pooled prompt tokens.
This file holds the layout, the metadata, the readers of its tables, and the writer.

Folder layout (format 2, what `save_pretrained` and `datasets_scripts` write)::

    README.md                       dataset card; its `configs` point `load_dataset` at data/*.parquet
    paircap_kb.json                 metadata: the two fingerprints, dimensions, index type, counts, file records
    index.faiss                     inner-product index, vector i = row i (the one copy of the vectors in memory)
    data/train-<build>-*.parquet    one row per pair (ROW_COLUMNS); `clip_index` points into clips.parquet
    clips.parquet                   one row per clip (CLIP_COLUMNS): audio id, length flag, where its audio lives
    tokens.safetensors              the clips' pooled tokens (`tokens_paircap.py`); absent in an index-only KB

Two encoders, two fingerprints: the embeddings and the index live in the frozen retrieval space (the pretrained CLAP),
valid for every release built on that CLAP (`retrieval_fingerprint`); the tokens are valid only for the token encoder
that made them (`token_fingerprint`). `paircap_kb.json` records the size and sha256 of every other file it describes
(`files`: relative name -> {size, sha256}; the card is not recorded), which `kb_integrity_paircap.py` checks on load.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .file_io_paircap import write_atomic
from .tokens_paircap import TOKENS_FILE

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

UPGRADE_COMMAND = "paircap kb upgrade --kb {folder} --model RELEASE"
TOKENS_COMMAND = "paircap kb tokens --kb {folder} --model RELEASE --root NAME=DIR ..."
MAX_METADATA_BYTES = 16 * 2**20


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


# ---- the file record -------------------------------------------------------------------------------------------
def kb_file_names(folder: Path, metadata: KnowledgeBaseMetadata) -> list[str]:
    """The files of `folder` that its metadata records: the row shards, the clip table, the index and the tokens."""
    shards = [Path(shard).relative_to(folder).as_posix() for shard in row_files(folder)]
    return [*shards, CLIPS_FILE, INDEX_FILE] + ([TOKENS_FILE] if metadata.has_tokens else [])


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
def write_clips(clips, path: str | os.PathLike) -> None:
    """The clip table as `clips.parquet` (CLIP_COLUMNS, in the clip schema)."""
    pq.write_table(clips.select(list(CLIP_COLUMNS)).cast(clip_schema()), path)


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
