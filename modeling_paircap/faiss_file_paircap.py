"""Reading a knowledge base's FAISS index file, checked before faiss allocates anything.

faiss's reader trusts the lengths a file announces: a 51 KB index whose vector-array length says 12.9 GB makes it
allocate 12.9 GB before it finds the file short. The recorded sha256 (`kb_integrity_paircap.py`) does not stop that
for a KB written before files were recorded, nor for a crafted KB whose record was rewritten to match its bytes. So
the header (type, dimension, vector count, metric) is compared with the KB's metadata and, for the types holding
float32 vectors (flat, IVF-flat, HNSW-flat: every type the KB writer makes), every announced length is checked against
the bytes that follow, reading only the small fields, before `faiss.read_index` runs.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .file_io_paircap import write_stream
from .index_paircap import require_faiss
from .kb_format_paircap import METADATA_FILE, KnowledgeBaseError

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
