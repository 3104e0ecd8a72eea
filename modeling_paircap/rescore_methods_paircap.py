"""The caption rescoring methods and their settings' check, in a module of their own without imports: the configuration
checks them and the command line lists them in its `--help` without loading torch."""

RESCORE_METHODS = ("clap",)  # CLAP-Refine (SLAM-AAC): `rescoring_paircap.py`


def check_rescoring(method: str | None, num_candidates: int, weight: float) -> None:
    """Refuse an unknown rescoring method, fewer than two candidates to choose from or a weight outside [0, 1]."""
    if method is not None and method not in RESCORE_METHODS:
        raise ValueError(f"unknown rescore method {method!r}; expected one of {RESCORE_METHODS} or None")
    if num_candidates < 2:
        raise ValueError(
            f"num_candidates must be at least 2 (the candidates rescoring chooses from), got {num_candidates}"
        )
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"rescore_weight must lie in [0, 1], got {weight}")


__all__ = ["RESCORE_METHODS", "check_rescoring"]
