"""The mini recipe's novel classes (recipes/mini/local/novel_classes.py): which classes qualify and are chosen, and
the filter that keeps them out of the captioners' pairs; the text-only KB's pairs (knowledge_bases.text_only_pairs).
The quick run's own novel classes, KBs and `novel` stage are checked in test_mini_recipe.py."""

from __future__ import annotations

import pytest
from datasets import Dataset

from recipes.mini.local.esc50 import EVENT_PHRASES, Esc50Clip
from recipes.mini.local.event_captions import EVENT_EXCLUSIONS, named_events
from recipes.mini.local.knowledge_bases import text_only_pairs
from recipes.mini.local.novel_classes import choose_novel_classes, unambiguous_classes, without_novel


def clip(category: str, index: int) -> Esc50Clip:
    return Esc50Clip(
        audio_id=f"{category}-{index}", path=f"/nowhere/{category}-{index}.flac", category=category, fold=1,
        src_file=f"{category}{index}", take="A", licence="CC0", target=-1,
    )  # fmt: skip


def test_unambiguous_classes_name_only_themselves():
    classes = unambiguous_classes()
    assert 10 <= len(classes) < 50 and not set(classes) & set(EVENT_EXCLUSIONS)
    for category in classes:  # the class's own phrases name it alone, and no other class's phrase names it
        assert all(named_events(phrase) == {category} for phrase in EVENT_PHRASES[category])
        others = [phrase for other, phrases in EVENT_PHRASES.items() if other != category for phrase in phrases]
        assert not any(category in named_events(phrase) for phrase in others)
    assert "crow" not in classes and "church_bells" not in classes  # a rooster crows; a cow bellows


def test_novel_classes_are_drawn_from_the_eligible_by_seed():
    categories = unambiguous_classes()[:8] + ["crow"]
    splits = {
        "train": [clip(c, 0) for c in categories],
        "test": [clip(c, 1) for c in categories if c != categories[0]],  # the first has no test clip
    }
    chosen = choose_novel_classes(splits, 3, seed=0)
    assert chosen == choose_novel_classes(splits, 3, seed=0) and list(chosen) == sorted(chosen)
    assert len(set(chosen)) == 3 and set(chosen) <= set(categories[1:8])  # in both splits, and unambiguous
    draws = {choose_novel_classes(splits, 3, seed=seed) for seed in range(6)}
    assert len(draws) > 1  # the seed decides
    with pytest.raises(ValueError, match="8 asked, only 7 classes are eligible"):
        choose_novel_classes(splits, 8, seed=0)


def test_without_novel_drops_pairs_whose_audio_holds_or_caption_names_a_novel_class():
    pairs = Dataset.from_dict(
        {
            "audio_id": ["dog-0", "cat-0", "mix-1", "mix-2", "noisy1-3", "noisy1-4"],
            "caption": [
                "A dog barks", "A cat meows", "A dog barks while rain falls", "A cat meows and rain falls",
                "A siren wails and rain falls", "A dog barks and a cat meows",
            ],
        }
    )  # fmt: skip
    events = {
        "dog-0": ("dog",), "cat-0": ("cat",), "mix-1": ("dog", "rain"), "mix-2": ("cat", "rain"),
        "noisy1-3": ("dog", "rain"), "noisy1-4": ("siren", "rain"),  # noisy: the captions name a wrong class
    }  # fmt: skip
    kept = without_novel(pairs, events, ("dog",))
    assert kept["audio_id"] == ["cat-0", "mix-2"]  # noisy1-3 holds a dog; noisy1-4's caption names one
    assert not any("dog" in named_events(caption) for caption in kept["caption"])
    assert without_novel(pairs, events, ()) is pairs


def test_text_only_pairs_keep_each_distinct_caption_once_without_audio():
    pairs = Dataset.from_dict(
        {
            "pair_id": ["a/0", "b/0", "c/0"],
            "audio_id": ["a", "b", "c"],
            "audio": [{"path": "/x/a.flac", "bytes": None}, {"path": "/x/b.flac", "bytes": None}, None],
            "caption": ["A dog barks", "A dog barks", "Rain falls"],
        }
    )
    text = text_only_pairs(pairs)
    assert text["pair_id"] == ["a/0", "c/0"] and text["caption"] == ["A dog barks", "Rain falls"]
    assert text["audio"] == [None, None]
