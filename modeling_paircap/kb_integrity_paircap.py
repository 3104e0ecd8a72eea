"""Checking a knowledge base's files before and after they are read.

The files are untrusted input. Loading refuses, with a `KnowledgeBaseError` naming the file and the check, before
reading anything large: a missing, extra or resized file (os.stat against the `files` record of `paircap_kb.json`);
parquet files whose footers do not give the recorded row counts and embedding widths; a FAISS index whose header or
structure disagrees with the metadata (`faiss_file_paircap.py`); then any file whose sha256 differs (hashed on the
first load of each file state, remembered in the HF cache; see `verified_cache_dir`); and, once read, index vectors
that differ from the rows' own embeddings in a spot-check. A KB written before the record existed loads with one
warning and every check but the sizes and hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from transformers.utils import logging

from .faiss_file_paircap import check_index_file
from .file_io_paircap import file_sha256
from .index_paircap import PairCapIndex
from .kb_format_paircap import (
    CLIPS_FILE,
    DATA_DIR,
    INDEX_FILE,
    MAX_METADATA_BYTES,
    METADATA_FILE,
    ROW_COLUMNS,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
    PairVectorView,
    check_parquet_columns,
    parquet_footer,
    row_files,
)
from .tokens_paircap import TOKENS_FILE

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # the knowledge base needs `datasets` (and its pyarrow); plain captioning does not
    pa = pq = None

logger = logging.get_logger(__name__)

RECORD_COMMAND = (
    'python -c "from modeling_paircap.knowledge_base_paircap import record_file_hashes; record_file_hashes({folder!r})"'
)

VERIFY_MODES = ("once", "always")  # `from_pretrained(verify=...)`: hash each file state once, or on every load
VERIFIED_CACHE_ENV = "PAIRCAP_VERIFIED_CACHE"  # where the verified file states are remembered (default: HF_HOME)
RACY_NS = 2 * 10**9  # a file changed this close to its hashing may change again unseen (coarse mtimes): not remembered
SPOT_CHECK_ROWS = 256  # index vectors compared with the rows' embeddings on every load
SPOT_CHECK_GROUPS = 8  # ... taken from the start of this many parquet row groups, spread over the KB
SPOT_CHECK_TOLERANCE = 1e-6
_warned_unverified: set[str] = set()


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


def spot_check_vectors(index: PairCapIndex, index_path: Path, shards: Sequence[str], exact: bool) -> None:
    """
    Compare up to `SPOT_CHECK_ROWS` vectors of the loaded index (read from `index_path`) with the rows' own
    `[audio_embedding ; text_embedding]` (the parquet shards hold a second copy): the first rows of up to
    `SPOT_CHECK_GROUPS` row groups spread over the KB (deterministic; a few ms). An index with float32 storage must
    reproduce them exactly; a lossy one (PQ, SQ) must give finite vectors within the norm of the row's vector of it.
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
        found = index.vectors_of(np.arange(first, first + len(expected)))
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
