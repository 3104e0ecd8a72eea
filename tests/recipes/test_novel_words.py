"""The word probe's pieces (`novel_words`): the same-class example, the query caption's span and its log-probability,
and its table."""

import json

import pytest
import torch

from recipes.mini.local.esc50 import EVENT_PHRASES, Esc50Clip
from recipes.mini.local.novel_words import CONDITIONS, caption_log_probs, last_span, same_class_examples, words_table


def clip(audio_id: str, category: str) -> Esc50Clip:
    return Esc50Clip(f"/clips/{audio_id}.wav", audio_id, category, audio_id, "A", 1, "CC0")


def test_the_same_class_example_is_a_seeded_training_clip_of_the_query_class():
    train = [clip(f"t{i}-{category}", category) for category in ("dog", "rain") for i in range(4)]
    queries = [clip("q0", "dog"), clip("q1", "rain"), clip("q2", "dog")]
    examples = same_class_examples(queries, train, seed=0)
    assert examples == same_class_examples(queries, train, seed=0)
    for query, (example, phrase) in zip(queries, examples, strict=True):
        assert example in train and example.category == query.category and phrase in EVENT_PHRASES[query.category]
    with pytest.raises(ValueError, match="no training clip of class 'cat'"):
        same_class_examples([clip("q3", "cat")], train, seed=0)


def test_the_last_span_is_the_query_caption():
    labels = torch.tensor([-100, 5, 6, -100, -100, 7, 8, 9, -100])  # an example's caption, then the query's
    assert last_span(labels).tolist() == [5, 6, 7]
    assert last_span(torch.tensor([-100, 4, 4])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="no caption token"):
        last_span(torch.full((3,), -100))


def test_caption_log_probs_are_the_model_loss_on_the_query_caption(tiny_release, sine_wave):
    _, model, processor = tiny_release
    clips, captions = [sine_wave(1), sine_wave(1, frequency=880.0)], ["a dog barks", "rain falls on a roof"]
    scores = caption_log_probs(model.eval(), processor, clips, [[], []], captions, batch_size=2)
    for clip_audio, caption, score in zip(clips, captions, scores, strict=True):  # no example: one caption scored
        with torch.no_grad():
            loss = model(**processor(audio=[clip_audio], captions=[caption])).loss
        assert score == pytest.approx(-loss.item(), abs=1e-4)
    with_example = caption_log_probs(model, processor, clips[:1], [[(clips[1], "a bell rings")]], captions[:1], 1)
    assert with_example[0] != pytest.approx(scores[0], abs=1e-6)  # the example is context, the query still scored


def test_the_words_table_has_a_row_per_probe_found(tmp_path):
    summary = {
        "novel": {"named": 2, "count": 3, "log_prob": -1.234},
        "known": {"named": 0, "count": 0, "log_prob": None},
    }
    (tmp_path / "a.json").write_text(json.dumps({"conditions": {c: summary for c in CONDITIONS}}))
    table = words_table({"model a": tmp_path / "a.json", "not run": tmp_path / "missing.json"}).splitlines()
    assert len(table) == 3 and table[2] == "| model a | 2 of 3 | 0 of 0 | 2 of 3 | 0 of 0 | -1.23 / n/a | -1.23 / n/a |"
    assert words_table({"not run": tmp_path / "missing.json"}) == "n/a"
