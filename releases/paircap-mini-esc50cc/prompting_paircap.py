"""The PairCap prompt format: a Vicuna v1.1 chat with one turn per audio segment, the caption loss labels, and caption
cleaning, all from one set of roles (`PromptFormat`)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_PROMPT_TEMPLATE = {
    "system": (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    ),
    "user_role": "USER",
    "assistant_role": "ASSISTANT",
    "instruction": "Describe the audio in one sentence.",
}
PROMPT_TEMPLATE_KEYS = frozenset(DEFAULT_PROMPT_TEMPLATE)

CaptionSpan = tuple[int, int]
"""Character span `[start, end)` of a caption and its end token in a prompt: positions the loss covers."""


@dataclass(frozen=True)
class PromptFormat:
    """
    `{system} {user_role}: <audio>\\n{instruction} {assistant_role}: {caption}{eos}{user_role}: ...`: the system text,
    then per audio segment a turn (`turn`) answered by its caption (`answer`), the last turn (the query to caption)
    left open. Captions are cleaned (`clean_caption`) on the way in and on the way out of the model.
    """

    system: str
    user_role: str
    assistant_role: str
    instruction: str

    @classmethod
    def from_template(cls, template: Mapping[str, str] | None = None) -> PromptFormat:
        """The format of a `prompt_template` dict (`DEFAULT_PROMPT_TEMPLATE` when None), checking its keys."""
        template = DEFAULT_PROMPT_TEMPLATE if template is None else template
        if set(template) != PROMPT_TEMPLATE_KEYS:
            raise ValueError(
                f"prompt_template needs exactly the keys {sorted(PROMPT_TEMPLATE_KEYS)}, got {sorted(template)}"
            )
        return cls(**template)

    def as_template(self) -> dict[str, str]:
        return asdict(self)

    @property
    def preamble(self) -> str:
        """The text before the first turn."""
        return self.system + " "

    def turn(self, placeholder: str) -> str:
        """One user turn holding an audio segment (`placeholder`: its `<audio>` text), up to the assistant's role."""
        return f"{self.user_role}: {placeholder}\n{self.instruction} {self.assistant_role}:"

    def answer(self, caption: str, eos_token: str) -> str:
        """The assistant's answer to a turn: the cleaned caption and the end-of-sequence token."""
        return " " + self.clean_caption(caption) + eos_token

    def clean_caption(self, text: str) -> str:
        """One clean line: cut at a new line or where a new turn starts (either role), collapse whitespace, strip."""
        turn_starts = "|".join(re.escape(f"{role}:") for role in (self.user_role, self.assistant_role))
        text = re.split(rf"\n|{turn_starts}", text, maxsplit=1)[0]
        return " ".join(text.split())

    def build(
        self, placeholders: Sequence[str], captions: Sequence[str | None], eos_token: str
    ) -> tuple[str, list[CaptionSpan]]:
        """
        One conversation with a turn per audio segment, each answered by its caption unless the caption is None (the
        query to caption). Returns the text and the spans of the answers (paper eq. 1: the loss covers every caption).
        """
        if len(placeholders) != len(captions):
            raise ValueError(f"build_prompt got {len(captions)} captions for {len(placeholders)} audio segments")
        text, spans = self.preamble, []
        for placeholder, caption in zip(placeholders, captions, strict=True):
            text += self.turn(placeholder)
            if caption is not None:
                start = len(text)
                text += self.answer(caption, eos_token)
                spans.append((start, len(text)))
        return text, spans


def fill_placeholders(text: str, audio_token: str, expansions: Sequence[str]) -> str:
    """Replace the `audio_token` placeholders of a user-written prompt, in order, by their expansions."""
    pieces = text.split(audio_token)
    return pieces[0] + "".join(expansion + piece for expansion, piece in zip(expansions, pieces[1:], strict=True))


def caption_labels(encoding, spans: Sequence[Sequence[CaptionSpan]]) -> np.ndarray:
    """Labels = input ids on tokens inside a caption span (caption plus its end token), -100 elsewhere; `encoding` is a
    tokenizer output with `offset_mapping`."""
    input_ids = encoding["input_ids"]
    labels = np.full(input_ids.shape, -100, dtype=np.int64)
    for row, row_spans in enumerate(spans):
        offsets = encoding["offset_mapping"][row]
        mask = encoding["attention_mask"][row].astype(bool)
        for start, end in row_spans:
            inside = (offsets[:, 1] > start) & (offsets[:, 0] < end) & (offsets[:, 1] > offsets[:, 0]) & mask
            labels[row, inside] = input_ids[row, inside]
    return labels


__all__ = ["DEFAULT_PROMPT_TEMPLATE", "PromptFormat", "caption_labels", "fill_placeholders"]
