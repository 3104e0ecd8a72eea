"""docs/speed.md quotes the figures of the committed results files (`benchmarks/speed_figures.py`), each beside the
name of its file and the load average of its run."""

import re

from helpers import REPO

from benchmarks import speed_figures


def paragraphs(text: str) -> list[str]:
    """The page's paragraphs and bullets, each on one line with single spaces."""
    blocks = re.split(r"\n\s*\n|\n(?=- )", text)
    return [" ".join(block.split()) for block in blocks]


def test_the_speed_page_quotes_every_figure_beside_its_results_file():
    blocks = paragraphs((REPO / "docs" / "speed.md").read_text())
    for name, (file, figure, load) in speed_figures.figures().items():
        quoted = [block for block in blocks if figure in block]
        assert quoted, f"docs/speed.md does not quote the {name} figure of {file}: {figure!r}"
        assert any(f"benchmarks/results/{file}" in block and load in block for block in quoted), (name, file, load)


def test_span_gives_one_value_or_a_range():
    assert speed_figures.span([0.931, 0.934]) == "0.93x"
    assert speed_figures.span([1.0, 0.905, 0.96]) == "0.91-1.00x"
    assert speed_figures.span([-3.2, 7.4], digits=0, unit=" %") == "-3 to 7 %"
