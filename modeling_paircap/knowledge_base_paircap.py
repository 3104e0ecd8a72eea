"""The PairCap knowledge base: a datasets repo of (audio, caption) pairs with CLAP embeddings, pooled audio tokens and
a FAISS index over `[audio_embedding ; text_embedding]`, loaded from a hub id or a local folder.

Folder layout (what `datasets_scripts` publishes)::

    README.md                 dataset card; its `configs` point `load_dataset` at data/*.parquet
    paircap_kb.json           metadata: encoder fingerprint, dimensions, index type, counts
    index.faiss               inner-product index, row i = KB row i
    data/train-<build>-*.parquet   the rows (KB_FEATURES); <build> = metadata.build_id
"""

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .retrieval_paircap import PairCapRetriever, RetrievedPair, concat_pair_vectors, require_faiss

try:
    import datasets
except ImportError:  # the knowledge base needs `datasets`; plain captioning does not
    datasets = None

KB_FORMAT_VERSION = 1
METADATA_FILE = "paircap_kb.json"
INDEX_FILE = "index.faiss"
DATA_DIR = "data"

# Row schema. Text-only entries (RECAP's caption datastore) have a zero audio embedding, no audio tokens and
# has_audio False. audio_tokens are the pooled CLAP encoder tokens (pre-projector) of the pair's audio, float16.
KB_COLUMNS = (
    "pair_id",
    "audio_id",
    "caption",
    "source",
    "split",
    "duration",
    "has_audio",
    "is_long",
    "audio_embedding",
    "text_embedding",
    "audio_tokens",
)


def kb_features(audio_dim: int, text_dim: int, token_dim: int):
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
            "is_long": datasets.Value("bool"),
            "audio_embedding": datasets.List(datasets.Value("float32"), length=audio_dim),
            "text_embedding": datasets.List(datasets.Value("float32"), length=text_dim),
            "audio_tokens": datasets.Array2D(shape=(None, token_dim), dtype="float16"),
        }
    )


def require_datasets():
    """The `datasets` module, or a clear error saying how to get it."""
    if datasets is None:
        raise ImportError("The PairCap knowledge base needs the `datasets` library: pip install datasets")
    return datasets


class KnowledgeBaseError(ValueError):
    """A knowledge base that cannot be used: missing or corrupt files, or made by another encoder."""


@dataclass
class KnowledgeBaseMetadata:
    """What `paircap_kb.json` records about a knowledge base."""

    encoder_fingerprint: str
    audio_dim: int
    text_dim: int
    token_dim: int
    audio_tokens_per_window: int
    num_pairs: int
    num_text_only: int = 0
    index_factory: str = "Flat"
    index_recall_at_10: float | None = None
    sources: dict[str, int] = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    build_id: str = ""
    format_version: int = KB_FORMAT_VERSION

    def save(self, folder: str | os.PathLike) -> None:
        Path(folder, METADATA_FILE).write_text(json.dumps(self.__dict__, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "KnowledgeBaseMetadata":
        path = Path(folder, METADATA_FILE)
        if not path.is_file():
            raise KnowledgeBaseError(f"{path}: missing; a PairCap knowledge base folder holds {METADATA_FILE}")
        try:
            values = json.loads(path.read_text())
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as error:
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


class PairCapKnowledgeBase:
    """Rows, metadata and a retriever over them; `search` returns retrieved pairs and `audio_tokens` their tokens."""

    def __init__(self, rows, metadata: KnowledgeBaseMetadata, index=None, folder: Path | None = None, device=None):
        self.rows = rows
        self.metadata = metadata
        self.folder = folder
        self.retriever = PairCapRetriever(
            pair_vectors(rows),
            rows["pair_id"],
            rows["audio_id"],
            rows["caption"],
            d_audio=metadata.audio_dim,
            index=index,
            device=device,
        )

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | os.PathLike,
        expected_fingerprint: str | None = None,
        revision: str | None = None,
        device: str | None = None,
    ) -> "PairCapKnowledgeBase":
        """
        Load a knowledge base from a local folder or a hub dataset id: the rows with `datasets`, the FAISS index file,
        and the metadata, checked against each other and (when given) against the encoder that will query it.
        """
        folder = resolve_folder(id_or_path, revision)
        metadata = KnowledgeBaseMetadata.load(folder)
        if expected_fingerprint is not None and metadata.encoder_fingerprint != expected_fingerprint:
            raise KnowledgeBaseError(
                f"{folder}: this knowledge base was embedded by another encoder (fingerprint "
                f"{metadata.encoder_fingerprint[:12]}…, the model's is {expected_fingerprint[:12]}…); its embeddings "
                "and audio tokens do not match this model. Rebuild it with this model: python -m datasets_scripts"
            )
        rows = load_rows(folder)
        if len(rows) != metadata.num_pairs:
            raise KnowledgeBaseError(f"{folder}: {len(rows)} rows but {METADATA_FILE} records {metadata.num_pairs}")
        index = None if device is not None else read_index(folder / INDEX_FILE, len(rows), metadata)
        return cls(rows, metadata, index=index, folder=folder, device=device)

    def __len__(self) -> int:
        return len(self.rows)

    def search(
        self,
        audio_embeds,
        text_embeds=None,
        mode: str = "generative_pair2pair",
        fusion_weight: float = 0.5,
        top_k: int = 5,
        exclude_ids: Sequence[Collection[str]] | None = None,
    ) -> list[list[RetrievedPair]]:
        """Batched retrieval; see `PairCapRetriever.search`."""
        return self.retriever.search(
            audio_embeds, text_embeds, mode=mode, fusion_weight=fusion_weight, top_k=top_k, exclude_ids=exclude_ids
        )

    def audio_tokens(self, rows: Sequence[int]) -> list[np.ndarray]:
        """The pooled audio tokens `(tokens, token_dim)` of the given rows (empty for text-only rows)."""
        tokens, _ = self._token_columns(rows)
        return [tokens[row] for row in rows]

    def examples(self, hits: Sequence[Sequence[RetrievedPair]]) -> list[list[dict]]:
        """Each query's hits as prompt examples: `{"audio_tokens", "caption", "is_long"}`, in retrieval order."""
        tokens, is_long = self._token_columns([hit.row for query in hits for hit in query])
        return [
            [{"audio_tokens": tokens[hit.row], "caption": hit.caption, "is_long": is_long[hit.row]} for hit in query]
            for query in hits
        ]

    def tokens_to(self, device, chunk_rows: int = 8192) -> "PairCapKnowledgeBase":
        """
        Keep every pair's pooled audio tokens on `device` as one flat float16 tensor with row offsets, so the tokens of
        retrieved pairs are sliced there instead of being read from the rows and copied at every `generate`. Costs
        (total tokens) x token_dim x 2 bytes: about 6 GB for 127 k pairs of 10 s clips at 32 tokens per window.
        """
        import torch

        parts, lengths = [], []
        for start in range(0, len(self.rows), chunk_rows):
            chunk = self.rows.select(range(start, min(start + chunk_rows, len(self.rows))))
            for tokens in chunk.with_format("numpy", columns=["audio_tokens"])[:]["audio_tokens"]:
                array = np.asarray(tokens, dtype=np.float16).reshape(-1, self.metadata.token_dim)
                parts.append(torch.from_numpy(array).to(device))
                lengths.append(len(array))
        self._device_tokens = torch.cat(parts)
        self._token_offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._is_long = np.asarray(self.rows["is_long"], dtype=bool)
        return self

    def _token_columns(self, rows: Sequence[int]) -> tuple[dict, dict[int, bool]]:
        """`audio_tokens` and `is_long` of the distinct rows asked for (device slices after `tokens_to`)."""
        unique = sorted(set(rows))
        if not unique:
            return {}, {}
        if getattr(self, "_device_tokens", None) is not None:
            offsets = self._token_offsets
            tokens = {row: self._device_tokens[offsets[row] : offsets[row + 1]] for row in unique}
            return tokens, {row: bool(self._is_long[row]) for row in unique}
        selected = self.rows.select(unique).with_format("numpy", columns=["audio_tokens", "is_long"])[:]
        dim = self.metadata.token_dim
        arrays = [np.asarray(t, dtype=np.float16).reshape(-1, dim) for t in selected["audio_tokens"]]
        tokens = dict(zip(unique, arrays, strict=True))
        return tokens, {row: bool(flag) for row, flag in zip(unique, selected["is_long"], strict=True)}


def pair_vectors(rows) -> np.ndarray:
    """The `[audio_embedding ; text_embedding]` matrix of KB rows: what the index holds, row i = KB row i."""
    return concat_pair_vectors(embedding_matrix(rows, "audio_embedding"), embedding_matrix(rows, "text_embedding"))


def embedding_matrix(rows, column: str) -> np.ndarray:
    """A fixed-length list column as a float32 `(rows, dim)` matrix, read from Arrow without Python objects."""
    table = rows.flatten_indices() if rows._indices is not None else rows
    values = table.data.column(column).combine_chunks()
    return np.asarray(values.values, dtype=np.float32).reshape(len(rows), values.type.list_size)


def load_rows(folder: Path):
    """The rows of a knowledge base folder as a `datasets.Dataset` (what `load_dataset(folder)` gives, split train)."""
    lib = require_datasets()
    files = sorted(str(path) for path in (folder / DATA_DIR).glob("*.parquet"))
    if not files:
        raise KnowledgeBaseError(f"{folder / DATA_DIR}: no parquet shards; not a PairCap knowledge base folder")
    return lib.load_dataset("parquet", data_files=files, split="train")


def read_index(path: Path, num_rows: int, metadata: KnowledgeBaseMetadata):
    """Read the FAISS index and check it against the rows and metadata, with errors naming the file."""
    faiss = require_faiss()
    if not path.is_file():
        raise KnowledgeBaseError(f"{path}: the FAISS index file is missing; rebuild it with python -m datasets_scripts")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise KnowledgeBaseError(f"{path}: not a readable FAISS index ({str(error).splitlines()[0]})") from None
    if index.ntotal != num_rows:
        raise KnowledgeBaseError(f"{path}: the index has {index.ntotal} vectors but the KB has {num_rows} rows")
    if index.d != metadata.audio_dim + metadata.text_dim:
        raise KnowledgeBaseError(
            f"{path}: the index has dimension {index.d}, the KB's embeddings {metadata.audio_dim + metadata.text_dim}"
        )
    return index
