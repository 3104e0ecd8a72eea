"""Untrusted knowledge-base files: every corruption of a KB folder is refused with a `KnowledgeBaseError` naming the
file and the check, before faiss, pyarrow or safetensors read anything large; hashes are verified once per file state;
a KB written before sizes and hashes were recorded loads with one warning."""

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq
import pytest
from test_knowledge_base import RETRIEVAL, TOKEN_DIM, TOKENS, synthetic_kb

import modeling_paircap.kb_integrity_paircap as integrity
import modeling_paircap.knowledge_base_paircap as kb_module
from datasets_scripts.publish import build_kb_index, kb_metadata
from modeling_paircap.faiss_file_paircap import check_index_file
from modeling_paircap.file_io_paircap import file_record
from modeling_paircap.index_paircap import PairCapIndex
from modeling_paircap.kb_format_paircap import (
    CLIPS_FILE,
    INDEX_FILE,
    METADATA_FILE,
    KnowledgeBaseError,
    KnowledgeBaseMetadata,
)
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase, record_file_hashes, write_knowledge_base
from modeling_paircap.tokens_paircap import TOKENS_FILE, ClipTokenStore, write_clip_tokens

REPO = Path(__file__).resolve().parents[2]
HEADER_BYTES = 4 + 4 + 8 + 8 + 8 + 1 + 4  # fourcc, d, ntotal, 2 dummies, is_trained, metric (faiss index_io)


def write_kb(folder: Path, factory: str = "Flat", shards: int = 3, seed: int = 0) -> Path:
    """The synthetic KB of test_knowledge_base (290 pairs, 50 clips, tokens), its rows cut into `shards` shards."""
    rows, clips, tokens = synthetic_kb(n_clips=120 if factory != "Flat" else 50, seed=seed)
    token_path = folder.parent / f"{folder.name}-{TOKENS_FILE}"
    write_clip_tokens(token_path, [len(t) for t in tokens], tokens, TOKEN_DIM, TOKENS)
    store = ClipTokenStore(token_path, len(tokens))
    index, recall = build_kb_index(rows, factory)
    metadata = kb_metadata(rows, clips.num_rows, RETRIEVAL, store, 4, factory, recall, {"name": "synthetic"})
    max_shard_bytes = rows.data.nbytes // shards + 1
    return write_knowledge_base(folder, rows, clips, metadata, index, store, max_shard_bytes=max_shard_bytes)


@pytest.fixture(autouse=True)
def verified_cache(tmp_path, monkeypatch):
    """Each test remembers verified files in its own cache folder."""
    monkeypatch.setenv("PAIRCAP_VERIFIED_CACHE", str(tmp_path / "verified-cache"))
    return tmp_path / "verified-cache"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_kb(tmp_path_factory.mktemp("integrity") / "kb")


@pytest.fixture
def kb(pristine, tmp_path):
    """A fresh copy of the KB to break."""
    folder = tmp_path / "kb"
    shutil.copytree(pristine, folder)
    return folder


@pytest.fixture
def no_big_reads(monkeypatch):
    """Arm: from then on, fail the test if the loader gets as far as faiss, a parquet column read or the token file
    (everything before them reads only headers, footers and, hashing, fixed-size blocks)."""

    def reached(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"{name} was reached: the corruption was not refused before reading")

        return fail

    def arm():
        monkeypatch.setattr(faiss, "read_index", reached("faiss.read_index"))
        monkeypatch.setattr(pq, "read_table", reached("pyarrow.parquet.read_table"))
        monkeypatch.setattr(pq, "ParquetFile", reached("pyarrow.parquet.ParquetFile (row groups)"))
        monkeypatch.setattr(kb_module, "ClipTokenStore", reached("ClipTokenStore (safetensors)"))

    return arm


def metadata_of(folder: Path) -> dict:
    return json.loads((folder / METADATA_FILE).read_text())


def edit_metadata(folder: Path, **changes) -> None:
    (folder / METADATA_FILE).write_text(json.dumps({**metadata_of(folder), **changes}))


def shards_of(folder: Path) -> list[Path]:
    return sorted((folder / "data").glob("*.parquet"))


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def flip(path: Path, offset: int) -> None:
    byte = path.read_bytes()[offset]
    patch(path, offset, bytes([byte ^ 0xFF]))


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def append(path: Path, extra: bytes = b"\0" * 64) -> None:
    with open(path, "ab") as handle:
        handle.write(extra)


def unrecord(folder: Path) -> None:
    """Make the folder look written before sizes and hashes were recorded."""
    metadata = metadata_of(folder)
    del metadata["files"]
    (folder / METADATA_FILE).write_text(json.dumps(metadata))


CASES = {
    # case: (corruption, file named, check named)
    "flipped index payload": (lambda f: flip(f / INDEX_FILE, 5000), INDEX_FILE, "sha256"),
    "patched index dimension": (lambda f: patch(f / INDEX_FILE, 4, struct.pack("<i", 33)), INDEX_FILE, "index header"),
    "patched index count": (lambda f: patch(f / INDEX_FILE, 8, struct.pack("<q", 291)), INDEX_FILE, "index header"),
    "patched index count of 10^12": (
        lambda f: patch(f / INDEX_FILE, 8, struct.pack("<q", 10**12)),
        INDEX_FILE,
        "index header",
    ),
    "patched index vector-array length": (
        lambda f: patch(f / INDEX_FILE, HEADER_BYTES, struct.pack("<Q", 3_200_000_000)),  # 12.8 GB announced
        INDEX_FILE,
        "index structure",
    ),
    "truncated index": (lambda f: truncate(f / INDEX_FILE), INDEX_FILE, "size"),
    "expanded index": (lambda f: append(f / INDEX_FILE), INDEX_FILE, "size"),
    "truncated shard": (lambda f: truncate(shards_of(f)[1]), "data/train-", "size"),
    "expanded shard": (lambda f: append(shards_of(f)[1]), "data/train-", "size"),
    "extra shard": (
        lambda f: shutil.copyfile(shards_of(f)[0], f / "data" / "train-other-00000-of-00001.parquet"),
        "train-other-00000-of-00001.parquet",
        "file list",
    ),
    "missing shard": (lambda f: shards_of(f)[2].unlink(), "data/train-", "file list"),
    "truncated clips": (lambda f: truncate(f / CLIPS_FILE), CLIPS_FILE, "size"),
    "tokens of a wrong size": (lambda f: append(f / TOKENS_FILE, b"\0" * 8), TOKENS_FILE, "size"),
    "missing tokens": (lambda f: (f / TOKENS_FILE).unlink(), TOKENS_FILE, "file list"),
    "metadata pair count": (lambda f: edit_metadata(f, num_pairs=289), "data", "row count"),
    "metadata pair count of 10^9": (lambda f: edit_metadata(f, num_pairs=10**9), "data", "row count"),
    "metadata clip count": (lambda f: edit_metadata(f, num_clips=51), CLIPS_FILE, "row count"),
    "metadata audio dim": (lambda f: edit_metadata(f, audio_dim=17), "data/train-", "parquet schema"),
    "metadata dims swapped in size": (
        lambda f: edit_metadata(f, audio_dim=20, text_dim=12),  # same index dimension, other split
        "data/train-",
        "parquet schema",
    ),
    "metadata index type": (lambda f: edit_metadata(f, index_factory="IVF4,Flat"), INDEX_FILE, "index header"),
    "metadata sha256": (
        lambda f: edit_metadata(
            f,
            files={**metadata_of(f)["files"], CLIPS_FILE: {**metadata_of(f)["files"][CLIPS_FILE], "sha256": "0" * 64}},
        ),
        CLIPS_FILE,
        "sha256",
    ),
}

# the same corruptions in a KB written before sizes and hashes were recorded: the structural checks still refuse
# what they can see before reading (a flipped payload byte is left to the spot-check); case: (file named, check named)
UNRECORDED = {
    "patched index vector-array length": (INDEX_FILE, "index structure"),
    "patched index count of 10^12": (INDEX_FILE, "index header"),
    "truncated index": (INDEX_FILE, "index structure"),
    "expanded index": (INDEX_FILE, "index structure"),
    "truncated shard": ("data/train-", "parquet footer"),
    "expanded shard": ("data/train-", "parquet footer"),
    "extra shard": ("data", "row count"),
    "missing shard": ("data", "row count"),
    "truncated clips": (CLIPS_FILE, "parquet footer"),
    "metadata pair count of 10^9": ("data", "row count"),
}


@pytest.mark.parametrize("case, recorded", [(case, True) for case in CASES] + [(case, False) for case in UNRECORDED])
def test_each_corruption_is_refused_before_reading(kb, case, recorded, no_big_reads):
    corrupt, file, check = CASES[case]
    if not recorded:
        unrecord(kb)
        file, check = UNRECORDED[case]
    corrupt(kb)
    no_big_reads()
    with pytest.raises(KnowledgeBaseError) as refused:
        PairCapKnowledgeBase.from_pretrained(kb)
    message = str(refused.value)
    assert file in message and f"(check: {check}" in message, message


def test_a_truncated_parquet_read_after_loading_names_the_file(kb):
    loaded = PairCapKnowledgeBase.from_pretrained(kb)
    truncate(shards_of(kb)[0])
    with pytest.raises(KnowledgeBaseError, match=r"data/train-.*parquet: cannot read the columns"):
        loaded.rows  # noqa: B018  (the rows are read on first use)


def rewrite_index(folder: Path, vectors: np.ndarray) -> None:
    """Replace the index by one over `vectors` and record it, as a consistent but wrong writer would."""
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(folder / INDEX_FILE))
    files = metadata_of(folder)["files"]
    edit_metadata(folder, files={**files, INDEX_FILE: file_record(folder / INDEX_FILE)})


@pytest.mark.parametrize("damage", ["perturbed", "nan", "scaled"])
def test_the_spot_check_compares_index_vectors_with_the_rows(kb, damage):
    vectors = PairCapKnowledgeBase.from_pretrained(kb).pair_vectors(np.arange(290))
    if damage == "perturbed":
        vectors[0, 3] += 1e-3
    elif damage == "nan":
        vectors[0, 0] = np.nan
    else:
        vectors *= 40  # the drill's flipped payload: scores of 40-76 for unit vectors
    rewrite_index(kb, vectors)
    with pytest.raises(KnowledgeBaseError, match=r"index.faiss: the vector of row 0 differs .*\(check: spot-check\)"):
        PairCapKnowledgeBase.from_pretrained(kb)
    unrecord(kb)  # without a record, the spot-check is what catches it
    with pytest.raises(KnowledgeBaseError, match=r"\(check: spot-check\)"):
        PairCapKnowledgeBase.from_pretrained(kb)


def test_the_spot_check_covers_every_shard_and_the_device_path(kb, monkeypatch):
    compared = []
    real = PairCapIndex.vectors_of
    monkeypatch.setattr(PairCapIndex, "vectors_of", lambda self, rows: compared.append(rows) or real(self, rows))
    starts = np.cumsum([0] + [pq.read_metadata(shard).num_rows for shard in shards_of(kb)])[:-1]
    for device in (None, "cpu"):  # faiss, then the vectors in a torch tensor
        compared.clear()
        PairCapKnowledgeBase.from_pretrained(kb, device=device)
        rows = np.concatenate(compared)
        assert set(starts) <= set(rows.tolist()) and len(set(rows.tolist())) >= integrity.SPOT_CHECK_ROWS


def test_writers_record_every_file(kb):
    files = metadata_of(kb)["files"]
    names = {INDEX_FILE, CLIPS_FILE, TOKENS_FILE} | {f"data/{shard.name}" for shard in shards_of(kb)}
    assert set(files) == names and len(shards_of(kb)) == 3
    for name, record in files.items():
        assert record == file_record(kb / name)
    copy = PairCapKnowledgeBase.from_pretrained(kb).save_pretrained(kb.parent / "copy")  # save_pretrained records
    assert set(metadata_of(copy)["files"]) >= {INDEX_FILE, CLIPS_FILE, TOKENS_FILE}
    for name, record in metadata_of(copy)["files"].items():
        assert record == file_record(copy / name)
    PairCapKnowledgeBase.from_pretrained(copy, verify="always")


def test_hashes_are_verified_once_per_file_state(kb, monkeypatch, verified_cache):
    monkeypatch.setattr(integrity, "RACY_NS", 0)  # the files were just written: remember them all the same
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    PairCapKnowledgeBase.from_pretrained(kb)
    assert len(hashed) == 6  # 3 shards, clips, index, tokens
    PairCapKnowledgeBase.from_pretrained(kb)
    assert len(hashed) == 6 and len(list(verified_cache.iterdir())) == 1  # nothing hashed again; one cache file
    PairCapKnowledgeBase.from_pretrained(kb, verify="always")
    assert len(hashed) == 12
    flip(kb / INDEX_FILE, 5000)
    later = (kb / INDEX_FILE).stat().st_mtime_ns + 10**10
    os.utime(kb / INDEX_FILE, ns=(later, later))  # a distinct state even where file times are coarse
    with pytest.raises(KnowledgeBaseError, match=r"index.faiss: sha256 .*\(check: sha256\)"):
        PairCapKnowledgeBase.from_pretrained(kb)
    assert hashed[12:] == [INDEX_FILE]  # only the changed file


def test_files_changed_just_before_they_were_hashed_are_hashed_again(kb, monkeypatch):
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda path: hashed.append(Path(path).name) or real(path))
    PairCapKnowledgeBase.from_pretrained(kb)
    PairCapKnowledgeBase.from_pretrained(kb)  # written (copied) less than RACY_NS ago: not remembered
    assert len(hashed) == 12


def test_a_read_only_cache_means_hashing_every_load(kb, monkeypatch, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("PAIRCAP_VERIFIED_CACHE", str(blocked / "cache"))
    PairCapKnowledgeBase.from_pretrained(kb)


def test_a_kb_without_a_file_record_loads_with_one_warning_until_recorded(kb, caplog):
    unrecord(kb)
    with caplog.at_level(logging.WARNING, logger=integrity.__name__):
        PairCapKnowledgeBase.from_pretrained(kb)
        PairCapKnowledgeBase.from_pretrained(kb)
    warnings = [r.getMessage() for r in caplog.records if r.name == integrity.__name__]
    assert len(warnings) == 1 and "not verified" in warnings[0] and "record_file_hashes" in warnings[0]
    assert str(kb) in warnings[0]
    record_file_hashes(kb)
    names = {INDEX_FILE, CLIPS_FILE, TOKENS_FILE} | {f"data/{shard.name}" for shard in shards_of(kb)}
    assert set(metadata_of(kb)["files"]) == names
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=integrity.__name__):
        PairCapKnowledgeBase.from_pretrained(kb)
    assert not [r for r in caplog.records if r.name == integrity.__name__]
    flip(kb / INDEX_FILE, 5000)
    with pytest.raises(KnowledgeBaseError, match=r"\(check: sha256\)"):
        PairCapKnowledgeBase.from_pretrained(kb, verify="always")


def test_bad_verify_argument(kb):
    with pytest.raises(ValueError, match="verify must be one of"):
        PairCapKnowledgeBase.from_pretrained(kb, verify="never")


def test_malformed_file_records_are_refused(kb):
    for files in ({"../outside": {"size": 1, "sha256": "0" * 64}}, {INDEX_FILE: {"size": -1, "sha256": "0" * 64}}):
        edit_metadata(kb, files=files)
        with pytest.raises(KnowledgeBaseError, match=r"paircap_kb.json: .*\(check: metadata\)"):
            PairCapKnowledgeBase.from_pretrained(kb)


@pytest.mark.parametrize("factory", ["IVF4,Flat", "HNSW8"])
def test_approximate_index_structures_are_checked_before_faiss(tmp_path, factory, no_big_reads):
    folder = write_kb(tmp_path / "approx", factory=factory, shards=1)
    unrecord(folder)  # the structural check alone
    data = (folder / INDEX_FILE).read_bytes()
    if factory.startswith("IVF"):
        sizes = data.index(b"ilar") + 4 + 8 + 8 + 4 + 8  # fourcc, nlist, code size, "full", the sizes' length
        patch(folder / INDEX_FILE, sizes, struct.pack("<Q", 10**9))  # a list of 10^9 vectors (4 TB)
    else:
        levels = HEADER_BYTES
        for item in (8, 4):  # assign_probas, cum_nneighbor_per_level
            levels += 8 + item * struct.unpack_from("<Q", data, levels)[0]
        patch(folder / INDEX_FILE, levels, struct.pack("<Q", 10**9))  # the levels of 10^9 vectors
    no_big_reads()
    with pytest.raises(
        KnowledgeBaseError, match=r"index.faiss: not a readable FAISS index .*\(check: index structure\)"
    ):
        PairCapKnowledgeBase.from_pretrained(folder)


def test_real_faiss_files_pass_the_structure_check(tmp_path):
    """The parser agrees with the files faiss writes, for every type the KB writer produces (and L2 flat)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 24)).astype(np.float32)
    for factory in ("Flat", "IVF8,Flat", "IVF64,Flat", "HNSW4", "HNSW16,Flat"):
        index = faiss.index_factory(24, factory, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.add(vectors)
        if factory == "IVF64,Flat":
            faiss.extract_index_ivf(index).make_direct_map()  # lists partly empty ("sprs" or "full"), a direct map
        path = tmp_path / f"{factory.replace(',', '_')}.faiss"
        faiss.write_index(index, str(path))
        header = check_index_file(path, 600, 24, factory)
        assert (header.dim, header.ntotal) == (24, 600)
    sparse = faiss.index_factory(24, "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    sparse.train(vectors)
    sparse.add(vectors[:5])  # at most 5 of 64 lists used: written as "sprs"
    faiss.write_index(sparse, str(tmp_path / "sparse.faiss"))
    assert b"sprs" in (tmp_path / "sparse.faiss").read_bytes()
    check_index_file(tmp_path / "sparse.faiss", 5, 24, "IVF64,Flat")
    empty = faiss.IndexFlatIP(24)
    faiss.write_index(empty, str(tmp_path / "empty.faiss"))
    check_index_file(tmp_path / "empty.faiss", 0, 24, "Flat")


def test_a_patched_vector_count_costs_no_memory(tmp_path):
    """The drill's case: a 51 KB index whose vector-array length announces 12.9 GB (faiss allocated it all before
    refusing). In a fresh process the refusal adds almost nothing to the peak RSS."""
    folder = write_kb(tmp_path / "kb", shards=1)
    unrecord(folder)  # the header check alone (with a record, the same check comes first as well)
    patch(folder / INDEX_FILE, HEADER_BYTES, struct.pack("<Q", 3_225_000_000))
    script = """
import sys
from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.knowledge_base_paircap import PairCapKnowledgeBase
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
before = hwm()
try:
    PairCapKnowledgeBase.from_pretrained(sys.argv[1])
except KnowledgeBaseError as error:
    print("REFUSED", error)
print("GROWTH", hwm() - before)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "REFUSED" in result.stdout and "(check: index structure)" in result.stdout
    growth = int(result.stdout.split("GROWTH")[1])
    assert growth < 64 * 2**20, growth  # against 12.9 GB before


FAISS_UNDER_A_MEMORY_LIMIT = """
import resource, sys
import faiss
limit = 2 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    faiss.read_index(sys.argv[1])
except MemoryError:
    print("MEMORY ERROR")
"""


def test_a_rewritten_file_record_passes_the_hashes_but_not_the_index_header_check(kb, no_big_reads):
    """Why the FAISS header parser stays next to the recorded sizes and sha256: they prove the files are the ones the
    record names, not that the record is honest. A crafted KB (here: 12.9 GB announced by its 51 KB index, the record
    rewritten to match its bytes) passes every size and hash check, and faiss's own reader asks for the 12.9 GB (under
    a 2 GB address-space limit: MemoryError); the header check refuses it before faiss runs."""
    patch(kb / INDEX_FILE, HEADER_BYTES, struct.pack("<Q", 3_225_000_000))
    edit_metadata(kb, files={**metadata_of(kb)["files"], INDEX_FILE: file_record(kb / INDEX_FILE)})
    metadata = KnowledgeBaseMetadata.load(kb)
    integrity.check_recorded_files(kb, metadata, [str(shard) for shard in shards_of(kb)])  # sizes: as recorded
    integrity.verify_hashes(kb, metadata.files, always=True)  # sha256: as recorded
    faiss_alone = subprocess.run(
        [sys.executable, "-c", FAISS_UNDER_A_MEMORY_LIMIT, str(kb / INDEX_FILE)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert "MEMORY ERROR" in faiss_alone.stdout, faiss_alone.stderr[-2000:]
    no_big_reads()
    refused = r"index.faiss: not a readable FAISS index .*\(check: index structure\)"
    with pytest.raises(KnowledgeBaseError, match=refused):
        PairCapKnowledgeBase.from_pretrained(kb)
