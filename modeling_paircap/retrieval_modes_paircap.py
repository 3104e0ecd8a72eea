"""The retrieval modes (paper §3.3-3.4), in a module of their own without imports: the command line lists them in its
`--help` without loading torch or transformers."""

RETRIEVAL_MODES = ("none", "audio2audio", "audio2text", "audio2mixture", "pair2pair", "generative_pair2pair")
PAIR_MODES = ("pair2pair", "generative_pair2pair")  # queries with a text half t_q (paper eq. 4)
CROSS_MODAL_MODES = ("audio2text", "audio2mixture")  # a_q meets the text half t_k: needs CLAP's joint space


def check_retrieval_mode(mode: str) -> str:
    """Return `mode`, or raise a ValueError naming the retrieval modes."""
    if mode not in RETRIEVAL_MODES:
        raise ValueError(f"unknown retrieval mode {mode!r}; expected one of {RETRIEVAL_MODES}")
    return mode


__all__ = ["CROSS_MODAL_MODES", "PAIR_MODES", "RETRIEVAL_MODES", "check_retrieval_mode"]
