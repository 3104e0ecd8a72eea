"""The DCASE-2024 table of `results.md` and the model card: unavailable metrics say so, never 0."""

from hub_cards.evaluation_tables import DCASE2024_COLUMNS, dcase2024_table


def test_dcase2024_table_marks_unavailable_metrics():
    run = {
        "name": "zero-shot",
        "metrics": {"meteor": 0.12345, "cider_d": 0.5, "spice": None, "spider": None, "spider_fl": None,
                    "fense": None, "vocab": 42.0, "clap_score": 0.25},
        "unavailable": {"spice": "no jars", "spider": "no jars", "spider_fl": "no jars", "fense": "no weights"},
    }  # fmt: skip
    lines = dcase2024_table({"runs": [run, {"name": "old", "metrics": {"meteor": 0.1}, "unavailable": {}}]}).split("\n")
    assert lines[0] == "| run | " + " | ".join(DCASE2024_COLUMNS.values()) + " |"
    assert "FENSE" in lines[0] and "SPIDEr-FL" in lines[0] and "Vocab" in lines[0]
    assert lines[2] == (
        "| zero-shot | 0.1235 | 0.5000 | unavailable | unavailable | unavailable | unavailable | 42 | 0.2500 |"
    )
    assert lines[3] == "| old | 0.1000 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"  # an older results.json
