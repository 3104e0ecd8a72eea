"""The PairCap knowledge base as data: its search columns, clip table, metadata, vector index (`PairCapIndex`) and
clip tokens, loaded from a folder or hub dataset id with every file checked (`kb_integrity_paircap.py`). It knows no
model and no processor: it searches given query embeddings and gives retrieved pairs as prompt examples (dicts of clip
tokens and captions); `PairCapRetriever` (`retrieval_paircap.py`) turns them into a model's inputs. The folder format
is described in `kb_format_paircap.py`.

A KB whose tokens are stale (made by another token encoder than the one named with `check_tokens`) still searches; its
tokens are refused with the command that refreshes them, or computed from the audio on the fly by the encoder the
caller gives, when `audio_roots` locate the clips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .audio_locations_paircap import AudioLocationError, clip_audio_location
from .faiss_file_paircap import read_index, stores_float32_vectors, write_index
from .file_io_paircap import link_or_copy, record_files, replacing_folder
from .index_paircap import PairCapIndex, RetrievedPair, flat_index
from .kb_format_paircap import (
    CLIPS_FILE,
    DATA_DIR,
    INDEX_FILE,
    MAX_SHARD_BYTES,
    METADATA_FILE,
    ROW_COLUMNS,
    SEARCH_COLUMNS,
    TOKENS_COMMAND,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
    PairVectorView,
    kb_file_names,
    minimal_card,
    push_folder_to_hub,
    read_clips,
    read_parquet_columns,
    require_datasets,
    resolve_folder,
    row_files,
    write_clips,
)
from .kb_integrity_paircap import _warned_unverified, check_kb_files, spot_check_vectors
from .tokens_paircap import TOKENS_FILE, ClipTokenStore, DeviceClipTokens

ClipEncoder = Callable[[list[dict]], list]
"""Encodes clips given as `{"path": ...}` dicts into pooled prompt tokens, one `(n, token_dim)` tensor per clip."""


class PairCapKnowledgeBase:
    """
    A knowledge base ready to search and to give prompt examples: its search columns (Arrow), clip table, metadata,
    vector index (`index`, a `PairCapIndex`), and clip tokens (memory-mapped, on a device after `tokens_to`, or
    computed on the fly).

    Load one with `from_pretrained` (a folder or hub id), write it with `save_pretrained`.
    """

    def __init__(
        self,
        table,
        clips,
        metadata: KnowledgeBaseMetadata,
        faiss_index,
        folder: Path | None = None,
        tokens: ClipTokenStore | None = None,
        device: str | None = None,
        audio_roots: Mapping[str, str | os.PathLike] | None = None,
    ):
        self.table = table
        self.clips = clips
        self.metadata = metadata
        self.folder = folder
        self.hub_id: str | None = None  # the hub dataset id it was loaded from (`from_pretrained`), else None
        self.tokens: ClipTokenStore | DeviceClipTokens | None = tokens
        self.audio_roots = {name: Path(path) for name, path in (audio_roots or {}).items()}
        self.expected_token_fingerprint: str | None = None  # the token encoder's, once `check_tokens` was called
        self._rows = None
        self._computed_tokens: dict[int, object] = {}
        self.clip_index = table.column("clip_index").to_numpy(zero_copy_only=False).astype(np.int64)
        self.is_long = clips.column("is_long").to_numpy(zero_copy_only=False).astype(bool)
        self.index = PairCapIndex(
            None,
            table.column("pair_id").combine_chunks(),
            table.column("audio_id").combine_chunks(),
            table.column("caption").combine_chunks(),
            d_audio=metadata.audio_dim,
            faiss_index=faiss_index,
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
        spot_check_vectors(kb.index, folder / INDEX_FILE, shards, exact)
        kb.hub_id = None if Path(id_or_path).is_dir() else str(id_or_path)
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
    def search(self, audio_embeds, text_embeds=None, **options) -> list[list[RetrievedPair]]:
        """Batched retrieval over this KB's index; `options` (mode, fusion weight, top-k, exclusions, pairs per clip)
        and their defaults as `PairCapIndex.search`."""
        return self.index.search(audio_embeds, text_embeds, **options)

    def pair_vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The float32 `[a_k ; t_k]` vectors of the given rows (read from the index or the device tensor)."""
        return self.index.vectors_of(np.asarray(rows, dtype=np.int64))

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

    def recorded_location(self, clip: int) -> tuple[str | None, str | None]:
        """Clip `clip`'s audio as the clip table records it: its root name and its path (None where absent)."""
        return self.clips.column("audio_root")[clip].as_py(), self.clips.column("audio_path")[clip].as_py()

    def audio_location(self, clip: int) -> str | None:
        """
        Where clip `clip`'s audio is, checked by `clip_audio_location`: an audio file resolved inside the folder given
        for its root (`audio_roots`; absolute paths only under `audio_roots["absolute"]`), a URL, or None (no location,
        or no folder given for its root). A location that escapes its root or is not audio is a `KnowledgeBaseError`.
        """
        try:
            return clip_audio_location(*self.recorded_location(clip), self.audio_roots)
        except AudioLocationError as error:
            audio_id = self.clips.column("audio_id")[clip].as_py()
            raise KnowledgeBaseError(
                f"{self.folder or 'the knowledge base'}: clip {clip} ({audio_id}): {error}"
            ) from None

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

    def tokens_to(self, device) -> PairCapKnowledgeBase:
        """Hold every clip's tokens on `device` as one float16 tensor (total tokens x token_dim x 2 bytes)."""
        if isinstance(self.tokens, ClipTokenStore):
            self.tokens = self.tokens.to(device)
        return self

    # ---- writing ------------------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, card: str | None = None) -> Path:
        """Write this knowledge base (rows, clips, index, tokens, metadata, card) to `folder`, datasets-repo layout."""
        tokens = self.tokens if isinstance(self.tokens, ClipTokenStore) else None
        return write_knowledge_base(folder, self.rows, self.clips, self.metadata, self.index.faiss_index, tokens, card)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Upload the folder this KB was loaded from or saved to as a hub dataset repo; returns the commit URL."""
        if self.folder is None:
            raise KnowledgeBaseError("save_pretrained(folder) first: push_to_hub uploads a knowledge base folder")
        return push_folder_to_hub(self.folder, repo_id, private=private, token=token)


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
        write_clips(clips, staging / CLIPS_FILE)
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
