"""The `mechanism` stage's conditions: the oracle shows the query's own clip with its class, the adversarial choice is
seeded, and the control prompts show pool clips of other classes only."""

from recipes.mini.local.esc50 import EVENT_PHRASES, Esc50Clip
from recipes.mini.local.event_captions import names_event
from recipes.mini.local.mechanism import POOL_PER_CLASS, control_pool, probe_conditions


def clip(audio_id: str, category: str) -> Esc50Clip:
    return Esc50Clip(f"/clips/{audio_id}.wav", audio_id, category, audio_id, "A", 1, "CC0")


TRAIN = [clip(f"t{i}-{category}", category) for category in ("dog", "cat", "rain", "cow") for i in range(3)]
TEST = [clip("q0", "dog"), clip("q1", "cat"), clip("q2", "rain")]


def test_the_pool_takes_a_few_clips_of_each_class_by_seed():
    pool = control_pool(TRAIN, seed=0)
    assert len(pool) == 4 * POOL_PER_CLASS and control_pool(TRAIN, seed=0) == pool
    assert [c.category for c in pool] == sorted(c.category for c in pool)


def test_conditions():
    pool = control_pool(TRAIN, seed=0)
    conditions = probe_conditions(TEST, pool, (1, 3), seed=5)
    assert list(conditions) == [
        "none", "oracle", "adversarial", "control_k1", "control_k3", "right_k1", "right_first_k3", "right_last_k3"
    ]  # fmt: skip
    assert conditions == probe_conditions(TEST, pool, (1, 3), seed=5)  # seeded: the same wrong classes and clips
    assert conditions["adversarial"] != probe_conditions(TEST, pool, (1, 3), seed=6)["adversarial"]
    assert conditions["oracle"] == probe_conditions(TEST, pool, (3,), seed=5)["oracle"]  # own seed streams
    for i, query in enumerate(TEST):
        (oracle,) = conditions["oracle"][i]
        assert oracle.clip == i and oracle.label == query.category and oracle.caption in EVENT_PHRASES[query.category]
        (wrong,) = conditions["adversarial"][i]
        assert wrong.clip == i and wrong.label != query.category and wrong.caption in EVENT_PHRASES[wrong.label]
        assert names_event(wrong.caption, wrong.label) and not names_event(wrong.caption, query.category)
        for k in (1, 3):
            shots = conditions[f"control_k{k}"][i]
            assert len({shot.clip for shot in shots}) == k
            for shot in shots:
                shown = pool[shot.clip - len(TEST)]
                assert shown.category == shot.label != query.category and shot.caption in EVENT_PHRASES[shot.label]


def test_the_right_pair_conditions_put_a_clip_of_the_query_class_first_or_last_among_the_controls_wrong_ones():
    pool = control_pool(TRAIN, seed=0)
    conditions = probe_conditions(TEST, pool, (1, 3), seed=5)
    for i, query in enumerate(TEST):
        (right,) = conditions["right_k1"][i]
        assert pool[right.clip - len(TEST)].category == right.label == query.category and right.clip >= len(TEST)
        wrong = conditions["control_k3"][i][:2]
        assert conditions["right_first_k3"][i] == [right, *wrong] and conditions["right_last_k3"][i] == [*wrong, right]
    assert "right_k1" not in probe_conditions(TEST, pool, (1,), seed=5)  # one shot: no wrong pairs beside it
    no_cat = [clip for clip in pool if clip.category != "cat"]  # the query q1 (a cat) has no clip of its class
    assert "right_k1" not in probe_conditions(TEST, no_cat, (1, 3), seed=5)
