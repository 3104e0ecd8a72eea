"""`paircap`, the one command line: caption and evaluate, assemble and convert releases, serve the demo, report
parameter counts, build and publish knowledge bases (`paircap kb ...`), read corpora (`paircap read ...`), and the
commands installed packages register under the `paircap.commands` entry points (the mini recipe's `paircap mini ...`).

Arguments are checked before any model loads. Expected failures (a bad argument, a missing or mismatched model or
knowledge base, no network) print one line, `paircap COMMAND: error: ...`, and exit with status 2; `--debug` shows the
traceback. Progress goes to stderr (the loggers of `paircap` and `datasets_scripts`), results to stdout.
"""

import argparse
import contextlib
import errno
import functools
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from datasets_scripts.kb_recipes import root_entry
from modeling_paircap.rescore_methods_paircap import RESCORE_METHODS
from paircap.card_cli import add_card_command
from paircap.cli_arguments import (
    AUDIO_ROOT_HELP,
    CAPTION_MODES,
    DEFAULT_MODEL,
    MODEL_HELP,
    RESCORE_WEIGHT_HELP,
    UsageError,
    add_runtime_arguments,
    candidate_count,
    check_top_k_fits,
    local_or_hub,
    non_negative_int,
    positive_int,
    unit_interval,
)
from paircap.evaluate_cli import add_evaluate_command
from paircap.hub_access import ModelLoadError, go_offline_if_unreachable, load_failure
from paircap.kb_cli import add_kb_commands
from paircap.logs import log_progress_to_stderr
from paircap.metrics_cli import add_metrics_commands
from paircap.release_names import resolve_model
from paircap.threads import apply_threads, prefer_passive_waiting

DEMO_AUDIO_ROOT_HELP = (
    "NAME=DIR where a KB's clips live: the demo plays them (and encodes missing or stale tokens); a clip is played "
    "only inside DIR (absolute=DIR allows the KB's absolute paths that lie under DIR)"
)
COMMAND_ENTRY_POINTS = "paircap.commands"
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # a full disk or a read-only file system: one line, exit 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paircap", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an expected failure")
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = functools.partial(commands.add_parser, parents=[common])

    caption = add_command("caption", help="caption audio files or folders, writing JSON lines")
    caption.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    caption.add_argument("--model", default=DEFAULT_MODEL, type=local_or_hub, help=MODEL_HELP)
    caption.add_argument("--batch-size", type=positive_int, default=8)
    add_runtime_arguments(caption)
    caption.add_argument(
        "--kb", default=None, type=local_or_hub, help="knowledge base hub id or folder (default: the model's own)"
    )
    caption.add_argument("--mode", default=None, choices=CAPTION_MODES, help="retrieval mode (default: the model's)")
    caption.add_argument("--top-k", type=non_negative_int, default=None, help="retrieved pairs per clip (0: zero-shot)")
    caption.add_argument("--weight", type=unit_interval, default=None, help="fusion weight W of pair-to-pair retrieval")
    caption.add_argument(
        "--max-pairs-per-clip", type=non_negative_int, default=1, help="retrieved captions of one clip (0: any)"
    )
    caption.add_argument("--audio-root", action="append", default=[], type=root_entry, help=AUDIO_ROOT_HELP)
    caption.add_argument("--features", default="torch", choices=["torch", "numpy"], help="log-mel implementation")
    caption.add_argument("--max-new-tokens", type=positive_int, default=40)
    caption.add_argument("--num-beams", type=positive_int, default=1)
    caption.add_argument(
        "--rescore", default=None, choices=RESCORE_METHODS, help="rescore beam candidates (CLAP-Refine)"
    )
    caption.add_argument("--num-candidates", type=candidate_count, default=None, help="candidates per clip to rescore")
    caption.add_argument("--rescore-weight", type=unit_interval, default=None, help=RESCORE_WEIGHT_HELP)
    caption.add_argument("--rescore-query", action="store_true", help="rescore the zero-shot pass (the text query) too")
    caption.add_argument(
        "--output", default=None, help="JSON lines file, replaced once every file has its line (default: stdout)"
    )
    caption.add_argument(
        "--resume", action="store_true", help="keep the files already captioned in --output (or its .partial file)"
    )
    caption.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    caption.add_argument("--verbose", action="store_true", help="list the folder entries skipped (not audio) on stderr")
    caption.set_defaults(run=run_caption)

    assemble = add_command("assemble", help="build an untrained release from CLAP and LM checkpoints")
    assemble.add_argument("--clap", default="laion/clap-htsat-unfused", help="ClapModel hub id or folder")
    assemble.add_argument("--lm", default="lmsys/vicuna-7b-v1.5", help="causal LM hub id or folder")
    assemble.add_argument("--output", required=True, help="release folder to write")
    assemble.add_argument("--audio-pool-stride", type=int, default=2)
    assemble.add_argument("--knowledge-base", default=None, help="knowledge base hub id or path to record")
    assemble.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    assemble.add_argument(
        "--features", default="numpy", choices=["numpy", "torch"], help="the processor's log-mel implementation"
    )
    assemble.set_defaults(run=run_assemble)

    convert = add_command("convert-laion-clap", help="convert an original LAION-CLAP .pt checkpoint")
    convert.add_argument("checkpoint", help="original LAION-CLAP checkpoint, e.g. 630k-audioset-best.pt")
    convert.add_argument("output", help="folder to write the ClapModel (safetensors) and feature extractor to")
    convert.add_argument(
        "--config", default=None, help="ClapConfig config.json or a folder with one (default: clap-htsat-unfused's)"
    )
    convert.set_defaults(run=run_convert)

    demo = add_command("demo", help="serve the web demo: caption a clip, see and play the pairs it retrieved")
    demo.add_argument("--model", default="mini", type=local_or_hub, help=MODEL_HELP)
    demo.add_argument(
        "--kb", default=None, type=local_or_hub, help="knowledge base hub id or folder (default: the model's own)"
    )
    demo.add_argument("--audio-root", action="append", default=[], type=root_entry, help=DEMO_AUDIO_ROOT_HELP)
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    demo.add_argument("--port", type=positive_int, default=None, help="default: 7860, or the next free one")
    demo.add_argument("--share", action="store_true", help="also open a temporary public Gradio link")
    add_runtime_arguments(demo)
    demo.add_argument("--max-new-tokens", type=positive_int, default=40)
    demo.add_argument("--num-candidates", type=candidate_count, default=None, help="CLAP-rescore: the best of N")
    demo.add_argument("--rescore-weight", type=unit_interval, default=0.5, help=RESCORE_WEIGHT_HELP)
    demo.set_defaults(run=run_demo)

    params = add_command("params", help="full-size parameter counts on the meta device (no weights)")
    params.add_argument("--json", default=None, help="also write the report as JSON")
    params.set_defaults(run=run_params)

    add_evaluate_command(commands, common)
    add_kb_commands(commands, common)
    add_metrics_commands(commands, common)
    add_card_command(commands, common)

    # `read` passes its arguments on to its own parser (`--debug` stays here; `-h` goes to it), as `mini` does.
    read = add_command("read", add_help=False, help="read a local caption corpus and print its reader report")
    read.set_defaults(run=run_read, passes_arguments_on=True)
    add_installed_commands(commands, common)
    return parser


def add_installed_commands(commands, common: argparse.ArgumentParser) -> None:
    """
    The commands of installed packages above the toolkit (the mini recipe's `mini`): each entry point of the group
    `COMMAND_ENTRY_POINTS` is a function `(commands, common)` that adds its subparsers, as `add_kb_commands` does. A
    subparser sets `run` (a function of the parsed arguments returning the exit status) and may set
    `passes_arguments_on`, which hands it the arguments after its name unparsed (`args.arguments`).
    """
    for entry_point in entry_points(group=COMMAND_ENTRY_POINTS):
        entry_point.load()(commands, common)


def run_caption(args: argparse.Namespace) -> int:
    from paircap.caption_output import write_records
    from paircap.captioning import caption_files, load_retriever, resolve_device, resolve_dtype, walk_audio_inputs
    from paircap.releases import load_release, load_release_config

    try:
        found = walk_audio_inputs(args.inputs)
    except FileNotFoundError as error:  # a typo'd input: nothing to caption
        raise UsageError(str(error)) from None
    if args.verbose:
        for path, reason in found.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
    files = found.files
    if not files:
        raise UsageError(f"no audio files found in {' '.join(args.inputs)}")
    if args.resume and not args.output:
        raise UsageError("--resume continues an --output file: pass --output FILE")
    model_id = resolve_model(args.model)
    go_offline_if_unreachable([model_id, args.kb])
    retrieves = check_caption_arguments(args, load_release_config(model_id, args.trust_remote_code))
    rescoring = rescoring_options(args)
    with open_caption_output(args.output, files, args.resume) as output:  # before the model: an unwritable F fails now
        todo = output.todo if output else files
        captioned = failed = 0
        start = time.perf_counter()
        if todo:
            device = resolve_device(args.device)
            dtype = resolve_dtype(args.dtype, device)
            model, processor = load_release(model_id, device, dtype, args.features, args.trust_remote_code)
            if retrieves:  # a missing or mismatched KB fails here, before any audio is decoded
                model.set_retriever(load_retriever(model, processor, args.kb, dict(args.audio_root) or None))
            start = time.perf_counter()
            records = caption_files(
                model,
                processor,
                todo,
                batch_size=args.batch_size,
                progress=not args.no_progress,
                in_order=output is None,  # a file gets each batch's lines at once, and sorts them at the end
                max_new_tokens=args.max_new_tokens,
                num_beams=args.num_beams,
                do_sample=False,
                **retrieval_options(args),
                **rescoring,
            )
            captioned, failed = output.write(records) if output else write_records(records, sys.stdout)
        if output:
            output.finish()
    elapsed = time.perf_counter() - start
    kept = f", {output.kept} kept from {args.output} or its partial file" if output else ""
    print(
        f"captioned {captioned} files, {failed} failed, {len(found.skipped)} skipped{kept}, in {elapsed:.1f} s "
        f"({captioned / max(elapsed, 1e-9):.2f} files/s)",
        file=sys.stderr,
    )
    return 0 if captioned or not failed else 1


def open_caption_output(path: str | None, files: list[Path], resume: bool):
    """The `--output` file's writer (a context manager), or a null context for standard output; an output that cannot
    be written, or an earlier one that cannot be resumed from, is a UsageError."""
    from paircap.caption_output import CaptionOutput, CaptionOutputError

    if not path:
        return contextlib.nullcontext()
    try:
        return CaptionOutput(path, files, resume)
    except CaptionOutputError as error:
        raise UsageError(str(error)) from error
    except OSError as error:
        raise UsageError(f"--output {path}: cannot write there ({error.strerror or error})") from error


def check_caption_arguments(args: argparse.Namespace, config) -> bool:
    """
    Check the retrieval arguments against each other and the release's config; returns whether retrieval runs.

    Raises:
        UsageError: a retrieval setting without a knowledge base, --weight outside generative_pair2pair, --top-k with
            --mode none, or more retrieved pairs than the LM's context holds.
    """
    knowledge_base = args.kb or config.knowledge_base
    if args.mode == "none" and args.top_k:
        raise UsageError(f"--top-k {args.top_k} retrieves pairs, but the mode is none (zero-shot)")
    options = {"--mode": args.mode if args.mode != "none" else None, "--top-k": args.top_k, "--weight": args.weight}
    given = [flag for flag, value in options.items() if value is not None]
    if given and knowledge_base is None:
        raise UsageError(
            f"{' and '.join(given)} need a knowledge base, and the release {args.model} names none: pass --kb"
        )
    mode = args.mode or (config.retrieval_mode if knowledge_base else "none")  # as generate's default
    if args.weight is not None and mode != "generative_pair2pair":
        raise UsageError(f"--weight is the fusion weight W of generative_pair2pair; mode {mode} does not use it")
    top_k = config.retrieval_top_k if args.top_k is None else args.top_k
    retrieves = mode != "none" and top_k > 0
    check_top_k_fits(top_k if retrieves else 0, config)
    return retrieves


def retrieval_options(args: argparse.Namespace) -> dict:
    """The retrieval arguments given on the command line (the model's config supplies the rest; the knowledge base
    is the model's retriever)."""
    options = {
        "retrieval_mode": args.mode,
        "top_k": args.top_k,
        "fusion_weight": args.weight,
    }
    chosen = {name: value for name, value in options.items() if value is not None}
    return {**chosen, "max_pairs_per_clip": args.max_pairs_per_clip or None}  # 0: no limit


def rescoring_options(args: argparse.Namespace) -> dict:
    """The rescoring arguments given on the command line (the model's config supplies the rest)."""
    options = {"num_candidates": args.num_candidates, "rescore_weight": args.rescore_weight}
    given = {name: value for name, value in options.items() if value is not None}
    if args.rescore is None and (given or args.rescore_query):
        flags = [f"--{name.replace('_', '-')}" for name in given] + ["--rescore-query"] * args.rescore_query
        raise UsageError(f"{' and '.join(flags)} set the rescoring: pass --rescore clap")
    return {"rescore": args.rescore, "rescore_query": args.rescore_query, **given} if args.rescore else {}


def run_assemble(args: argparse.Namespace) -> int:
    import torch

    from paircap.assembly import assemble_release

    go_offline_if_unreachable([args.clap, args.lm])
    try:
        assemble_release(
            args.clap,
            args.lm,
            args.output,
            dtype=getattr(torch, args.dtype),
            feature_backend=args.features,
            audio_pool_stride=args.audio_pool_stride,
            knowledge_base=args.knowledge_base,
        )
    except OSError as error:
        raise load_failure(error, args.clap, args.lm) from error
    print(f"wrote an untrained PairCap release to {args.output}", file=sys.stderr)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from paircap.convert_laion_clap import convert_laion_clap_checkpoint, load_clap_config

    config = load_clap_config(args.config) if args.config else None
    model = convert_laion_clap_checkpoint(args.checkpoint, args.output, config)
    millions = sum(parameter.numel() for parameter in model.parameters()) / 1e6
    print(f"wrote a transformers ClapModel ({millions:.1f}M parameters) to {args.output}", file=sys.stderr)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    try:
        from paircap.demo import build_demo, launch_demo
    except ModuleNotFoundError as error:
        if error.name != "gradio":
            raise
        raise UsageError('the demo needs gradio: pip install "paircap[demo]"') from None
    model_id = resolve_model(args.model)
    go_offline_if_unreachable([model_id, args.kb])
    demo = build_demo(
        model_id,
        knowledge_base=args.kb,
        audio_roots=dict(args.audio_root),
        device=args.device,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        trust_remote_code=args.trust_remote_code,
        num_candidates=args.num_candidates or 0,
        rescore_weight=args.rescore_weight,
    )
    launch_demo(demo, args.host, args.port, args.share)
    return 0


def run_params(args: argparse.Namespace) -> int:
    import json

    from paircap.param_report import format_report, parameter_report

    report = parameter_report()
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def run_read(args: argparse.Namespace) -> int:
    from datasets_scripts.readers import ReaderError
    from datasets_scripts.readers import main as read_main

    try:
        return read_main(args.arguments)
    except ReaderError as error:  # an unknown layout or a malformed caption file: one line naming file and line
        raise UsageError(str(error)) from error


def is_expected(error: Exception) -> bool:
    """A failure the user can act on: a bad argument, a release or knowledge base that cannot load, a folder that
    cannot be written, a full disk or a read-only file system."""
    if isinstance(error, (UsageError, ModelLoadError)):
        return True
    from modeling_paircap.file_io_paircap import FolderWriteError  # torch and transformers: only once a command failed
    from modeling_paircap.kb_format_paircap import KnowledgeBaseError

    return isinstance(error, (KnowledgeBaseError, FolderWriteError)) or (
        isinstance(error, OSError) and error.errno in DISK_ERRNOS
    )


def main(argv: list[str] | None = None) -> int:
    prefer_passive_waiting()  # before anything imports torch: `paircap.cli` itself does not
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passes_arguments_on", False):
        args.arguments = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    command = " ".join(filter(None, (args.command, getattr(args, "kb_command", None))))
    log_progress_to_stderr()
    try:
        apply_threads(getattr(args, "threads", None))
        return args.run(args)
    except Exception as error:
        if args.debug or not is_expected(error):
            raise
        print(f"paircap {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
