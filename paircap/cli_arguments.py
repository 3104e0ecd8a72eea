"""What every `paircap` command's arguments share: the argparse types (checked before any model loads), the error for
arguments that cannot work together, the model and retrieval flags' help, and the context check of `--top-k`."""

import argparse
from collections.abc import Callable
from pathlib import Path

from modeling_paircap.retrieval_modes_paircap import RETRIEVAL_MODES
from paircap.release_names import PATH_PREFIXES, TRUST_REMOTE_CODE_HELP
from paircap.threads import add_threads_argument

DEFAULT_MODEL = "org/paircap"
MODEL_HELP = "hub id, local release folder, or mini (the offline toy release in a checkout)"
AUDIO_ROOT_HELP = (
    "NAME=DIR where a KB's clips live: tokens of an index-only or stale KB are encoded from the audio; a clip is read "
    "only inside DIR (absolute=DIR allows the KB's absolute paths that lie under DIR)"
)
# pair2pair queries with a given text per clip (`generate(text_queries=...)`); the command line has only audio, and
# generative_pair2pair is that query with the model's own zero-shot caption as the text.
RESCORE_WEIGHT_HELP = "weight λ of the CLAP audio-text similarity against the LM log-probability"
CAPTION_MODES = tuple(mode for mode in RETRIEVAL_MODES if mode != "pair2pair")


class UsageError(Exception):
    """Arguments that cannot work together, or with the chosen release (found before any audio is decoded)."""


def int_at_least(minimum: int, meaning: str, name: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (`meaning` says what that is in the error)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {meaning}, got {text}")
        return value

    parse.__name__ = name  # argparse names the type in its "invalid ... value" message
    return parse


positive_int = int_at_least(1, "a positive integer", "positive_int")
non_negative_int = int_at_least(0, "0 or more", "non_negative_int")
candidate_count = int_at_least(2, "at least 2 (the candidates rescoring chooses from)", "candidate_count")


def unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def local_or_hub(text: str) -> str:
    """A folder or a hub id; a name written as a path (`./x`, `../x`, `/x`, `~/x`) must exist, it is no hub id."""
    if text.startswith(PATH_PREFIXES) and not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return text


def torch_device(text: str) -> str:
    """`auto`, or a torch device this machine has (`cpu`, `cuda`, `cuda:1`, `mps`, ...)."""
    if text == "auto":
        return text
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else f", and this torch {torch.__version__} is built without CUDA"
            raise argparse.ArgumentTypeError(f"{text}: no CUDA device on this machine{build}; use --device cpu")
        if (device.index or 0) >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA device(s), up to cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use --device cpu")
    return text


def check_top_k_fits(top_k: int, config) -> None:
    """Refuse `top_k` retrieved pairs whose audio tokens alone (one window each) overflow the LM's context."""
    from paircap.captioning import max_retrieved_pairs, min_prompt_tokens

    most = max_retrieved_pairs(config)
    if top_k > most:
        raise UsageError(
            f"--top-k {top_k}: the prompt would need at least {min_prompt_tokens(top_k, config)} tokens "
            f"({config.audio_tokens_per_window} audio tokens per clip), more than the LM's context of "
            f"{config.text_config.max_position_embeddings}; at most {most} pairs fit"
        )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """`--trust-remote-code`, `--device`, `--threads` and `--dtype`: how a command that runs a release loads it and
    where it runs."""
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    parser.add_argument("--device", default="auto", type=torch_device, help="auto, cpu, cuda, cuda:1, ...")
    add_threads_argument(parser)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
