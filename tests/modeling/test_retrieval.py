"""The vector index (`PairCapIndex`): every mode against an independent brute-force top-k, exclusions, paths, and
FAISS index files."""

import numpy as np
import pytest
import torch

from datasets_scripts.faiss_index import build_index, describe_index, recall_at_k, save_index
from modeling_paircap import index_paircap
from modeling_paircap.faiss_file_paircap import read_index
from modeling_paircap.index_paircap import PairCapIndex, RetrievedPair, build_query, concat_pair_vectors
from modeling_paircap.kb_format_paircap import KnowledgeBaseError
from modeling_paircap.retrieval_modes_paircap import PAIR_MODES, RETRIEVAL_MODES

D_A, D_T = 32, 32
NUM_CLIPS, CAPTIONS_PER_CLIP, NUM_TEXT_ONLY = 350, 5, 250  # 1750 pairs from clips + 250 text-only = 2000 rows
SEARCH_MODES = [mode for mode in RETRIEVAL_MODES if mode != "none"]
MODE_WEIGHTS = [(mode, 0.5) for mode in ("audio2audio", "audio2text", "audio2mixture")] + [
    (mode, weight) for mode in PAIR_MODES for weight in (0.0, 0.3, 0.5, 1.0)
]
NEAR_TIE = 1e-5


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class KB:
    """A Clotho-like KB: 5 captions per clip share the clip's audio embedding; text-only rows have zero audio."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        clip_audio = unit(rng.standard_normal((NUM_CLIPS, D_A)))
        self.audio = np.concatenate([np.repeat(clip_audio, CAPTIONS_PER_CLIP, 0), np.zeros((NUM_TEXT_ONLY, D_A))])
        self.audio = self.audio.astype(np.float32)
        self.text = unit(rng.standard_normal((len(self.audio), D_T)))
        self.n = len(self.audio)
        self.pair_ids = [f"p{row}" for row in range(self.n)]
        clip_rows = NUM_CLIPS * CAPTIONS_PER_CLIP
        self.audio_ids = [f"clip{row // CAPTIONS_PER_CLIP}" if row < clip_rows else "" for row in range(self.n)]
        self.captions = [f"caption {row}" for row in range(self.n)]
        # queries near some clips (so clip groups and exclusions matter) plus unrelated ones; t_q near some captions
        self.query_audio = unit(np.concatenate([clip_audio[:8] + 0.3 * rng.standard_normal((8, D_A)),
                                                rng.standard_normal((8, D_A))]))  # fmt: skip
        self.query_text = unit(self.text[rng.choice(self.n, 16)] + 0.5 * rng.standard_normal((16, D_T)))

    def pair_index(self, **kwargs) -> PairCapIndex:
        return PairCapIndex.from_embeddings(
            self.audio, self.text, self.pair_ids, self.audio_ids, self.captions, **kwargs
        )

    def scores(self, mode: str, weight: float, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Brute force in float64, written from the paper's equations (not from the query layout): S, S_A, S_T."""
        audio, text = self.audio.astype(np.float64), self.text.astype(np.float64)
        a_q, t_q = self.query_audio[i].astype(np.float64), self.query_text[i].astype(np.float64)
        s_a = audio @ a_q
        s_t = text @ (t_q if mode in PAIR_MODES else a_q)
        s = {
            "audio2audio": s_a,
            "audio2text": s_t,
            "audio2mixture": s_a + s_t,
        }.get(mode, weight * s_a + (1 - weight) * s_t)
        return s, s_a, s_t

    def excluded_mask(self, exclude: set[str]) -> np.ndarray:
        return np.array(
            [p in exclude or (a != "" and a in exclude) for p, a in zip(self.pair_ids, self.audio_ids, strict=True)]
        )

    def top_k(self, mode, weight, i, k, exclude=frozenset(), per_clip=1):
        """The best k rows after exclusions, keeping at most `per_clip` rows of a clip (text-only rows: each alone)."""
        s, s_a, s_t = self.scores(mode, weight, i)
        s = np.where(self.excluded_mask(set(exclude)), -np.inf, s)
        order = np.lexsort((np.arange(self.n), -s))
        order = order[np.isfinite(s[order])]
        taken: dict[str, int] = {}
        rows = []
        for row in order:
            clip = self.audio_ids[row]
            taken[clip] = taken.get(clip, 0) + 1
            if per_clip is None or clip == "" or taken[clip] <= per_clip:
                rows.append(row)
            if len(rows) == k:
                break
        rows = np.asarray(rows, dtype=np.int64)
        return rows, s, s_a[rows], s_t[rows]


@pytest.fixture(scope="module")
def kb() -> KB:
    return KB()


@pytest.fixture(scope="module")
def pair_index(kb) -> PairCapIndex:
    return kb.pair_index()


def assert_matches(kb: KB, got: list[RetrievedPair], mode, weight, i, k, exclude=frozenset(), per_clip=1):
    rows, s, s_a, s_t = kb.top_k(mode, weight, i, k, exclude, per_clip)
    got_rows = np.array([pair.row for pair in got])
    assert len(got) == k
    np.testing.assert_allclose([pair.score for pair in got], s[rows], atol=NEAR_TIE)
    np.testing.assert_allclose([pair.audio_score for pair in got], s_a, atol=NEAR_TIE)
    np.testing.assert_allclose([pair.text_score for pair in got], s_t, atol=NEAR_TIE)
    # ids and order must match, except where float32 rounding may flip a near tie of the float64 brute force
    for got_row, want_row in zip(got_rows, rows, strict=True):
        assert got_row == want_row or abs(s[got_row] - s[want_row]) < NEAR_TIE, (mode, weight, i, got_rows, rows)
    assert len(set(got_rows)) == k
    assert not kb.excluded_mask(set(exclude))[got_rows].any()
    clips = [kb.audio_ids[row] for row in got_rows if kb.audio_ids[row]]
    if per_clip is not None:
        assert max(clips.count(clip) for clip in clips) <= per_clip if clips else True
    for pair in got:
        assert (pair.pair_id, pair.audio_id, pair.caption) == (
            kb.pair_ids[pair.row],
            kb.audio_ids[pair.row],
            kb.captions[pair.row],
        )
    return got_rows


def search(pair_index, kb, mode, weight, k, **kwargs):
    return pair_index.search(kb.query_audio, kb.query_text, mode=mode, fusion_weight=weight, top_k=k, **kwargs)


# ------------------------------------------------------------------------------------------------------ build_query
def test_build_query_layouts():
    a, t = np.array([[1.0, 2.0]], np.float32), np.array([[3.0, 4.0]], np.float32)
    assert build_query("audio2audio", a).tolist() == [[1, 2, 0, 0]]
    assert build_query("audio2text", a).tolist() == [[0, 0, 1, 2]]
    assert build_query("audio2mixture", a).tolist() == [[1, 2, 1, 2]]
    for mode in PAIR_MODES:
        np.testing.assert_allclose(build_query(mode, a, t, 0.25), [[0.25, 0.5, 2.25, 3.0]])
    query = build_query("audio2audio", torch.ones(3, 2), d_text=5)
    assert query.shape == (3, 7) and query.dtype == np.float32


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("text2audio", np.ones((1, 4))), {}, "unknown retrieval mode"),
        (("none", np.ones((1, 4))), {}, "no retrieval"),
        (("pair2pair", np.ones((1, 4))), {}, "needs text_embeds"),
        (("generative_pair2pair", np.ones((1, 4))), {}, "first-pass caption"),
        (("pair2pair", np.ones((1, 4)), np.ones((1, 4)), 1.5), {}, r"\[0, 1\]"),
        (("audio2audio", np.ones((1, 4)), None, -0.1), {}, r"\[0, 1\]"),
        (("pair2pair", np.ones((1, 4)), np.ones((2, 4)), 0.5), {}, "shape"),
        (("pair2pair", np.ones((1, 4)), np.ones((1, 3)), 0.5), {"d_text": 4}, "shape"),
        (("audio2text", np.ones((1, 4))), {"d_text": 6}, "one joint space"),
        (("audio2audio", np.ones(4)), {}, "2-D"),
    ],
)
def test_build_query_errors(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_query(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ search: exactness
@pytest.mark.parametrize(("mode", "weight"), MODE_WEIGHTS)
@pytest.mark.parametrize("per_clip", [1, 2, None])
def test_every_mode_matches_brute_force(kb, pair_index, mode, weight, per_clip):
    results = search(pair_index, kb, mode, weight, k=10, max_pairs_per_clip=per_clip)
    assert len(results) == len(kb.query_audio)
    for i, got in enumerate(results):
        assert_matches(kb, got, mode, weight, i, 10, per_clip=per_clip)


def test_top_k_holds_distinct_clips_unless_asked_otherwise(kb, pair_index):
    """Queries near a clip: by default one caption of that clip (its best), then other clips; without the limit, the
    clip's five captions come first, as they share its audio embedding."""
    distinct = search(pair_index, kb, "audio2audio", 0.5, k=5)
    every = search(pair_index, kb, "audio2audio", 0.5, k=5, max_pairs_per_clip=None)
    for i in range(8):  # the queries made near clips 0..7
        assert len({pair.audio_id for pair in distinct[i]}) == 5
        assert len({pair.audio_id for pair in every[i]}) == 1  # the five captions of the nearest clip
        assert distinct[i][0].row == every[i][0].row  # the clip's best caption is the one kept
    with pytest.raises(ValueError, match="max_pairs_per_clip must be >= 1"):
        search(pair_index, kb, "audio2audio", 0.5, k=5, max_pairs_per_clip=0)


def test_text_only_rows_are_found_by_text_and_never_score_on_audio(kb, pair_index):
    text_only = np.arange(NUM_CLIPS * CAPTIONS_PER_CLIP, kb.n)
    found = [pair for got in search(pair_index, kb, "pair2pair", 0.0, k=20) for pair in got if pair.row in text_only]
    assert found and all(pair.audio_score == 0.0 and pair.audio_id == "" for pair in found)


def test_pair2pair_with_w1_is_audio2audio(kb, pair_index):
    """Same query [a_q ; 0], so the same rows with bit-identical S and S_A (S_T differs: it is <t_q, t_k> here)."""
    audio_only = search(pair_index, kb, "audio2audio", 0.5, k=10)
    for mode in PAIR_MODES:
        pairs = search(pair_index, kb, mode, 1.0, k=10)
        assert [[(p.row, p.score, p.audio_score) for p in got] for got in pairs] == [
            [(p.row, p.score, p.audio_score) for p in got] for got in audio_only
        ]


def test_ties_are_broken_by_row_even_across_the_fetch_boundary():
    rng = np.random.default_rng(1)
    distinct = unit(rng.standard_normal((5, 8)))
    vectors = np.tile(distinct, (10, 1))  # row r is a copy of distinct[r % 5]: 10 exact copies each
    ids = [str(row) for row in range(len(vectors))]
    query = distinct[2:3, :4]
    for device in (None, "cpu"):
        pair_index = PairCapIndex(vectors, ids, ids, ids, device=device, chunk_size=7)
        got = pair_index.search(query, mode="audio2audio", top_k=7)[0]
        assert [pair.row for pair in got] == [2, 7, 12, 17, 22, 27, 32]
        assert len({pair.score for pair in got}) == 1


def test_none_mode_and_zero_k_return_empty_lists(kb, pair_index):
    assert search(pair_index, kb, "none", 0.5, k=5) == [[] for _ in kb.query_audio]
    assert search(pair_index, kb, "pair2pair", 0.5, k=0) == [[] for _ in kb.query_audio]
    assert pair_index.search(kb.query_audio[:2], mode="none") == [[], []]  # no text needed when nothing is retrieved


def test_top_k_beyond_the_kb_returns_every_row(kb):
    small = PairCapIndex.from_embeddings(kb.audio[:30], kb.text[:30], kb.pair_ids[:30], kb.audio_ids[:30],
                                             kb.captions[:30])  # fmt: skip
    got = small.search(kb.query_audio[:2], kb.query_text[:2], mode="pair2pair", top_k=100, max_pairs_per_clip=None)
    assert [sorted(pair.row for pair in row) for row in got] == [list(range(30))] * 2
    per_clip = small.search(kb.query_audio[:2], kb.query_text[:2], mode="pair2pair", top_k=100)
    assert [sorted(pair.audio_id for pair in row) for row in per_clip] == [sorted({f"clip{c}" for c in range(6)})] * 2


# --------------------------------------------------------------------------------------------- search: exclusions
def test_exclusion_by_pair_id_and_by_audio_id(kb, pair_index):
    plain = search(pair_index, kb, "generative_pair2pair", 0.5, k=10)
    excludes = []
    for i, got in enumerate(plain):  # drop the best pair by its pair id and the clip of the second best by audio id
        exclude = {got[0].pair_id}
        if got[1].audio_id:
            exclude.add(got[1].audio_id)
        excludes.append(exclude if i % 3 else set())  # some queries exclude nothing
    results = search(pair_index, kb, "generative_pair2pair", 0.5, k=10, exclude_ids=excludes)
    for i, got in enumerate(results):
        rows = assert_matches(kb, got, "generative_pair2pair", 0.5, i, 10, excludes[i])
        if excludes[i]:
            assert plain[i][0].row not in rows


def test_exclusions_that_empty_the_first_fetch_trigger_a_refetch_for_that_query_only(kb, pair_index, monkeypatch):
    """Query 0 excludes the clips of its top-50 audio2audio hits: 250 rows, far more than the first fetch holds."""
    top50 = search(pair_index, kb, "audio2audio", 0.5, k=50, max_pairs_per_clip=None)[0]
    exclude = [{pair.audio_id for pair in top50}, set(), {"clip0"}]
    assert len(exclude[0]) == 10  # 10 clips x 5 captions = the top-50 rows
    calls = []
    original = pair_index._search_index

    def recording(queries, k):
        calls.append((len(queries), k))
        return original(queries, k)

    monkeypatch.setattr(pair_index, "_search_index", recording)
    got = pair_index.search(kb.query_audio[:3], mode="audio2audio", top_k=5, exclude_ids=exclude)
    assert calls[0][0] == 3 and all(batch == 1 for batch, _ in calls[1:]) and len(calls) >= 2
    for i in range(3):
        assert_matches(kb, got[i], "audio2audio", 0.5, i, 5, exclude[i])
    assert not {pair.row for pair in got[0]} & {pair.row for pair in top50}


def test_exclusion_of_everything_leaves_no_result(kb, pair_index):
    got = pair_index.search(kb.query_audio[:1], kb.query_text[:1], top_k=5, exclude_ids=[set(kb.pair_ids)])
    assert got == [[]]


def test_exclusion_of_a_bare_string_is_one_id(kb, pair_index):
    best = search(pair_index, kb, "audio2audio", 0.5, k=1)[0][0]
    got = pair_index.search(kb.query_audio[:1], mode="audio2audio", top_k=3, exclude_ids=[best.pair_id])[0]
    assert best.row not in [pair.row for pair in got]


# ------------------------------------------------------------------------------------- search: batching and paths
@pytest.mark.parametrize(("mode", "weight"), [("generative_pair2pair", 0.5), ("audio2mixture", 0.5)])
def test_batch_equals_one_by_one(kb, pair_index, mode, weight):
    excludes = [{f"clip{i}", f"p{1800 + i}"} for i in range(len(kb.query_audio))]
    batch = search(pair_index, kb, mode, weight, k=8, exclude_ids=excludes)
    for i, got in enumerate(batch):
        alone = pair_index.search(kb.query_audio[i : i + 1], kb.query_text[i : i + 1], mode=mode,
                                 fusion_weight=weight, top_k=8, exclude_ids=[excludes[i]])[0]  # fmt: skip
        assert [pair.row for pair in alone] == [pair.row for pair in got]
        np.testing.assert_allclose([pair.score for pair in alone], [pair.score for pair in got], atol=NEAR_TIE)


@pytest.mark.parametrize(("mode", "weight"), MODE_WEIGHTS[:4] + [("generative_pair2pair", 0.3)])
def test_torch_path_equals_faiss_path(kb, pair_index, mode, weight):
    on_torch = kb.pair_index(device="cpu", chunk_size=300)  # 7 chunks, the last one partial
    assert on_torch.faiss_index is None
    excludes = [{f"clip{i}"} for i in range(len(kb.query_audio))]
    faiss_results = search(pair_index, kb, mode, weight, k=10, exclude_ids=excludes)
    torch_results = search(on_torch, kb, mode, weight, k=10, exclude_ids=excludes)
    for i, (a, b) in enumerate(zip(faiss_results, torch_results, strict=True)):
        assert [pair.row for pair in a] == [pair.row for pair in b]
        np.testing.assert_allclose([pair.score for pair in a], [pair.score for pair in b], atol=NEAR_TIE)
        assert_matches(kb, b, mode, weight, i, 10, excludes[i])


def test_without_faiss_the_torch_path_is_used(kb, monkeypatch):
    monkeypatch.setattr(index_paircap, "faiss", None)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        index_paircap.require_faiss()
    pair_index = kb.pair_index()
    assert pair_index.device == "cpu" and pair_index.faiss_index is None
    for i, got in enumerate(search(pair_index, kb, "pair2pair", 0.3, k=5)):
        assert_matches(kb, got, "pair2pair", 0.3, i, 5)


@pytest.mark.parametrize("factory", ["HNSW32", "IVF16,Flat"])
def test_approximate_index_plugs_in(kb, factory):
    vectors = concat_pair_vectors(kb.audio, kb.text)
    index = build_index(vectors, factory)
    pair_index = kb.pair_index(faiss_index=index)
    assert pair_index.faiss_index is index
    got = search(pair_index, kb, "audio2audio", 0.5, k=5)
    assert all(len(row) == 5 for row in got)
    assert all(abs(pair.score - pair.audio_score) < NEAR_TIE for row in got for pair in row)


def test_the_blas_threshold_is_set_in_the_installed_faiss_unit():
    """faiss before 1.15 counts queries (default 20); 1.15 compares queries x dimension (default 128000)."""
    per_query = index_paircap.FAISS_BLAS_THRESHOLD == 20
    assert index_paircap.faiss_blas_threshold(16, 1024, 127_000) == (16 if per_query else 16 * 1024)
    assert index_paircap.faiss_blas_threshold(16, 1024, index_paircap.BLAS_MIN_ROWS - 1) is None
    assert index_paircap.faiss_blas_threshold(None, 1024, 127_000) is None


# ------------------------------------------------------------------------------------------- search: validation
def test_constructor_validation(kb):
    vectors = concat_pair_vectors(kb.audio, kb.text)
    with pytest.raises(ValueError, match="pair_ids has 1999 entries"):
        PairCapIndex(vectors, kb.pair_ids[:-1], kb.audio_ids, kb.captions)
    with pytest.raises(ValueError, match="the index has 1000 vectors but the KB has 2000 rows: rebuild the index"):
        PairCapIndex(vectors, kb.pair_ids, kb.audio_ids, kb.captions, faiss_index=build_index(vectors[:1000]))
    with pytest.raises(ValueError, match="dim 48"):
        PairCapIndex(vectors, kb.pair_ids, kb.audio_ids, kb.captions, faiss_index=build_index(vectors[:, :48]))
    with pytest.raises(ValueError, match="inner-product"):
        PairCapIndex(vectors, kb.pair_ids, kb.audio_ids, kb.captions, faiss_index=build_index(vectors, metric="l2"))
    with pytest.raises(ValueError, match="pass d_audio"):
        PairCapIndex(vectors[:, :63], kb.pair_ids, kb.audio_ids, kb.captions)


def test_search_validation(kb, pair_index):
    with pytest.raises(ValueError, match="exclude_ids has 1 entries for a batch of 16"):
        search(pair_index, kb, "pair2pair", 0.5, k=5, exclude_ids=[{"p0"}])
    with pytest.raises(ValueError, match="audio half has dim 32"):
        pair_index.search(np.ones((1, 16)), mode="audio2audio")
    with pytest.raises(ValueError, match="needs text_embeds"):
        pair_index.search(kb.query_audio, mode="generative_pair2pair")
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        pair_index.search(kb.query_audio, mode="text2text")


def test_unequal_halves_use_the_kb_split(kb):
    """d_a != d_t: dims come from the KB; cross-modal modes refuse, S_T of audio2audio is NaN."""
    audio = unit(np.random.default_rng(2).standard_normal((kb.n, 16)))
    pair_index = PairCapIndex.from_embeddings(audio, kb.text, kb.pair_ids, kb.audio_ids, kb.captions)
    assert (pair_index.d_audio, pair_index.d_text) == (16, 32)
    got = pair_index.search(
        audio[:2], kb.query_text[:2], mode="pair2pair", fusion_weight=0.3, top_k=3, max_pairs_per_clip=None
    )
    expected = 0.3 * audio @ audio[0] + 0.7 * kb.text @ kb.query_text[0]
    assert [pair.row for pair in got[0]] == list(np.argsort(-expected)[:3])
    assert np.isnan(pair_index.search(audio[:1], mode="audio2audio", top_k=1)[0][0].text_score)
    with pytest.raises(ValueError, match="one joint space"):
        pair_index.search(audio[:1], mode="audio2text")


# ------------------------------------------------------------------------------------------------ FAISS index files
def clustered(rng, n, dim=64, clusters=200, noise=1.0) -> np.ndarray:
    centers = unit(np.random.default_rng(99).standard_normal((clusters, dim)))
    return unit(centers[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim))


def test_flat_index_is_exact(kb):
    vectors = concat_pair_vectors(kb.audio, kb.text)
    index = build_index(vectors)
    assert type(index).__name__ == "IndexFlatIP" and index.ntotal == kb.n
    queries = build_query("pair2pair", kb.query_audio, kb.query_text, 0.5)
    assert recall_at_k(index, vectors, queries, k=10) == 1.0
    assert recall_at_k(index, build_index(vectors), queries, k=10) == 1.0


@pytest.mark.parametrize(("factory", "setting"), [("HNSW32", "efSearch"), ("IVF64,Flat", "nprobe")])
def test_approximate_indexes_reach_high_recall_on_clustered_data(factory, setting):
    rng = np.random.default_rng(3)
    vectors, queries = clustered(rng, 6000), clustered(rng, 200)
    index = build_index(vectors, factory, train_size=3000)
    info = describe_index(index)
    assert info["ntotal"] == 6000 and info["metric"] == "ip"
    assert info[setting] == {"efSearch": 128, "nprobe": 16}[setting]  # the defaults, recorded on the index
    recall = recall_at_k(index, vectors, queries, k=10)
    assert 0.9 <= recall <= 1.0, recall
    if setting == "nprobe":  # recall_at_k does see the approximation: one probed list loses neighbours
        coarse = build_index(vectors, factory, train_size=3000, search_params={"nprobe": 1})
        assert recall_at_k(coarse, vectors, queries, k=10) < recall


def test_build_index_rejects_bad_arguments():
    vectors = unit(np.random.default_rng(4).standard_normal((100, 8)))
    with pytest.raises(ValueError, match="metric"):
        build_index(vectors, metric="cosine")
    with pytest.raises(ValueError, match="does not apply"):
        build_index(vectors, "HNSW8", search_params={"nprobe": 4})
    with pytest.raises(ValueError, match="needs at least 256 training vectors"):
        build_index(vectors, "IVF256,Flat")


def test_save_load_round_trip_keeps_results_and_search_params(tmp_path):
    rng = np.random.default_rng(5)
    vectors, queries = clustered(rng, 3000), clustered(rng, 20)
    index = build_index(vectors, "IVF16,Flat", search_params={"nprobe": 3})
    path = save_index(index, tmp_path / "sub" / "kb.faiss")
    loaded = read_index(path, 3000, 64)
    assert describe_index(loaded) == describe_index(index) and describe_index(loaded)["nprobe"] == 3
    for before, after in zip(index.search(queries, 10), loaded.search(queries, 10), strict=True):
        np.testing.assert_array_equal(before, after)
    assert not list(tmp_path.glob("sub/.*.tmp.*"))


def test_load_errors_name_the_file(tmp_path):
    vectors = unit(np.random.default_rng(6).standard_normal((50, 8)))
    path = save_index(build_index(vectors), tmp_path / "kb.faiss")
    with pytest.raises(KnowledgeBaseError, match="missing.faiss: the FAISS index file is missing"):
        read_index(tmp_path / "missing.faiss", 50, 8)
    with pytest.raises(KnowledgeBaseError, match=r"kb\.faiss: the index has 50 vectors but the KB has 60 rows"):
        read_index(path, 60, 8)
    with pytest.raises(KnowledgeBaseError, match=r"kb\.faiss: the index has dimension 8"):
        read_index(path, 50, 16)
    l2 = save_index(build_index(vectors, metric="l2"), tmp_path / "l2.faiss")
    with pytest.raises(KnowledgeBaseError, match="inner-product"):
        read_index(l2, 50, 8)
    corrupt = tmp_path / "corrupt.faiss"
    corrupt.write_bytes(b"not a faiss index at all")
    with pytest.raises(KnowledgeBaseError, match=r"corrupt\.faiss: not a readable FAISS index"):
        read_index(corrupt, 50, 8)
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(KnowledgeBaseError, match=r"truncated\.faiss: not a readable FAISS index \(corrupt or"):
        read_index(truncated, 50, 8)


def test_a_clips_captions_within_rounding_noise_tie_and_the_lower_row_stands_for_it():
    """Five captions of one clip share its audio embedding; float32 rounding may score one of them a few ulps higher.
    Every search path then picks the clip's first row, not whichever row the rounding favoured."""
    rng = np.random.default_rng(7)
    audio = unit(rng.standard_normal((4, 8)))
    vectors = np.concatenate([np.repeat(audio, 5, axis=0), unit(rng.standard_normal((20, 8)))], axis=1)
    vectors[13, :8] *= 1 + 3e-7  # clip 2's fourth caption: a rounding-sized lead
    ids = [f"p{row}" for row in range(20)]
    clips = [f"clip{row // 5}" for row in range(20)]
    for device in (None, "cpu"):
        pair_index = PairCapIndex(vectors, ids, clips, ids, device=device)
        hits = pair_index.search(audio[2:3], mode="audio2audio", top_k=2)[0]
        assert [hit.row for hit in hits][0] == 10 and hits[1].audio_id != "clip2"
        every = pair_index.search(audio[2:3], mode="audio2audio", top_k=2, max_pairs_per_clip=None)[0]
        assert every[0].row == 13  # without the per-clip limit the raw order stands


def test_a_flat_index_filled_in_place_equals_one_built_by_add():
    rng = np.random.default_rng(8)
    vectors = unit(rng.standard_normal((5000, 16)))
    import faiss

    added = faiss.IndexFlatIP(16)
    added.add(vectors)
    chunks = (vectors[start : start + 700] for start in range(0, 5000, 700))
    filled = index_paircap.flat_index(5000, 16, chunks)
    np.testing.assert_array_equal(faiss.serialize_index(filled), faiss.serialize_index(added))
    with pytest.raises(ValueError, match="got 700 vectors for a flat index of 5000"):
        index_paircap.flat_index(5000, 16, iter([vectors[:700]]))
    assert index_paircap.flat_index(0, 16, iter([])).ntotal == 0
