"""`paircap evaluate`: score captions of an evaluation split under retrieval settings (the method x KB grid, the W
and top-k sweeps, CLAP-rescored rows), rescore saved predictions, or probe whether the model reads its prompt."""

import argparse
import sys

from datasets_scripts.kb_recipes import root_entry
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
from paircap.hub_access import go_offline_if_unreachable
from paircap.release_names import resolve_model

# The default method grid (zero-shot always runs first); audio2text only when asked for.
EVALUATE_MODES = tuple(mode for mode in CAPTION_MODES if mode not in ("none", "audio2text"))


def add_evaluate_command(commands, common: argparse.ArgumentParser) -> None:
    """`paircap evaluate ...`."""
    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="score captions of an evaluation split under retrieval settings"
    )
    evaluate.add_argument("--model", default=DEFAULT_MODEL, type=local_or_hub, help=MODEL_HELP)
    evaluate.add_argument("--data", nargs="+", help="caption dataset(s): save_to_disk / parquet folder or hub id")
    evaluate.add_argument("--data-name", default="custom", help="dataset name for the model card (e.g. clotho)")
    evaluate.add_argument("--split", default="evaluation", help="split name for the model card")
    evaluate.add_argument(
        "--kb", nargs="*", default=[], type=local_or_hub, help="knowledge bases to compare (hub ids or folders)"
    )
    recorded = evaluate.add_mutually_exclusive_group()  # --rescore keeps the settings the runs recorded
    recorded.add_argument("--default-kb", help="the --kb that is the release's own: the card reports its run")
    evaluate.add_argument(
        "--mode", nargs="*", default=None, choices=CAPTION_MODES, help=f"default: {' '.join(EVALUATE_MODES)}"
    )
    evaluate.add_argument("--weight", type=unit_interval, default=0.5, help="W of the method x KB grid")
    evaluate.add_argument("--top-k", type=non_negative_int, default=4, help="k of the method x KB grid")
    evaluate.add_argument("--weight-sweep", type=unit_interval, nargs="*", default=[], help="e.g. 0.1 0.3 0.5 0.7 0.9")
    evaluate.add_argument("--top-k-sweep", type=positive_int, nargs="*", default=[], help="e.g. 1 2 4 6 8 10")
    evaluate.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N clips only")
    evaluate.add_argument("--batch-size", type=positive_int, default=8)
    evaluate.add_argument("--max-new-tokens", type=positive_int, default=40)
    evaluate.add_argument("--num-beams", type=positive_int, default=1)
    evaluate.add_argument("--num-candidates", type=candidate_count, nargs="*", default=[], help="rows CLAP-rescored")
    evaluate.add_argument(
        "--rescore-weight", type=unit_interval, nargs="+", default=[0.5], help=RESCORE_WEIGHT_HELP + " (rows each)"
    )
    evaluate.add_argument("--rescore-query", action="store_true", help="rescored rows rescore the zero-shot pass too")
    add_runtime_arguments(evaluate)
    evaluate.add_argument("--audio-root", action="append", default=[], type=root_entry, help=AUDIO_ROOT_HELP)
    evaluate.add_argument("--features", default="torch", choices=["torch", "numpy"], help="log-mel implementation")
    evaluate.add_argument("--output-dir", required=True)
    recorded.add_argument("--rescore", action="store_true", help="score the saved predictions again, no generation")
    evaluate.add_argument(
        "--context-probe",
        action="store_true",
        help="instead of the runs: does the model read its prompt? each clip with no example, its own clip and first "
        "reference, its own clip and another clip's reference, other clips' pairs (context_probe.json and .md)",
    )
    evaluate.add_argument(
        "--probe-examples", type=positive_int, default=1, help="other clips' pairs in the probe's control prompts"
    )
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from paircap.evaluation import evaluate, plan_runs, rescore, rescoring_runs
    from paircap.evaluation_report import evaluation_settings, print_report, write_report

    if args.context_probe:
        return run_context_probe_command(args)
    if args.rescore:
        results = rescore(args.output_dir)
    else:
        from paircap.caption_data import group_references, load_pairs
        from paircap.captioning import load_retriever, resolve_device, resolve_dtype
        from paircap.releases import load_release, load_release_config

        if not args.data:
            raise UsageError("paircap evaluate needs --data (or --rescore of an earlier --output-dir)")
        model_id = resolve_model(args.model)
        go_offline_if_unreachable([model_id, *args.kb, *args.data])
        config = load_release_config(model_id, args.trust_remote_code)
        check_evaluate_arguments(args, config)
        items = group_references(load_pairs(args.data))[: args.limit]
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        model, processor = load_release(model_id, device, dtype, args.features, args.trust_remote_code)
        roots = dict(args.audio_root) or None
        retrievers = {kb: load_retriever(model, processor, kb, audio_roots=roots) for kb in args.kb}
        modes = args.mode or EVALUATE_MODES
        rescoring = rescoring_runs(args.num_candidates, args.rescore_weight, args.rescore_query)
        runs = plan_runs(args.kb, modes, args.weight, args.top_k, args.weight_sweep, args.top_k_sweep, rescoring)
        settings = {"model": args.model, "data": args.data, "clips": len(items), "runs": len(runs)}
        settings |= evaluation_settings(config, model_id, args.kb, args.default_kb, args.data_name, args.split)
        results = evaluate(
            model, processor, items, runs, args.output_dir, retrievers, batch_size=args.batch_size,
            progress=not args.no_progress, settings=settings, max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams, do_sample=False,
        )  # fmt: skip
    print_report(args.output_dir, write_report(results, args.output_dir))
    return 0


def run_context_probe_command(args: argparse.Namespace) -> int:
    """`paircap evaluate --context-probe`: the context probe on the first --limit clips of --data, with their
    references as the examples' captions (`paircap.context_probe.reference_conditions`), scored with CIDEr-D."""
    from paircap.caption_data import group_references, load_pairs
    from paircap.captioning import resolve_device, resolve_dtype
    from paircap.context_probe import ProbeItem, reference_conditions, run_context_probe, write_context_probe
    from paircap.releases import load_release

    clashing = [flag for flag, value in (("--rescore", args.rescore), ("--kb", args.kb), ("--mode", args.mode),
                ("--default-kb", args.default_kb), ("--weight-sweep", args.weight_sweep),
                ("--top-k-sweep", args.top_k_sweep)) if value]  # fmt: skip
    if clashing:
        raise UsageError(f"--context-probe searches no knowledge base: drop {', '.join(clashing)}")
    if not args.data:
        raise UsageError("paircap evaluate --context-probe needs --data")
    model_id = resolve_model(args.model)
    go_offline_if_unreachable([model_id, *args.data])
    items = group_references(load_pairs(args.data))[: args.limit]
    if len(items) <= args.probe_examples:
        raise UsageError(
            f"--context-probe needs more clips than --probe-examples {args.probe_examples}: {len(items)} in --data"
        )
    device = resolve_device(args.device)
    model, processor = load_release(model_id, device, resolve_dtype(args.dtype, device), args.features,
                                    args.trust_remote_code)  # fmt: skip
    probe_items = [ProbeItem(item.audio_id, item.audio, item.references) for item in items]
    result = run_context_probe(
        model, processor, probe_items, reference_conditions(probe_items, args.probe_examples), score_cider=True,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, do_sample=False,
    )  # fmt: skip
    result["settings"] |= {"model": args.model, "data": args.data}
    json_path, table_path = write_context_probe(result, args.output_dir)
    print(table_path.read_text())
    print(f"wrote {json_path}, {table_path}", file=sys.stderr)
    return 0


def check_evaluate_arguments(args: argparse.Namespace, config) -> None:
    """Retrieval runs, sweeps and --default-kb need --kb; every k of the grid and sweep must fit the LM's context."""
    asked = [flag for flag, value in (("--mode", args.mode), ("--weight-sweep", args.weight_sweep),
                                      ("--top-k-sweep", args.top_k_sweep)) if value]  # fmt: skip
    if asked and not args.kb:
        raise UsageError(f"{' and '.join(asked)} need knowledge bases to retrieve from: pass --kb KB [KB ...]")
    if args.default_kb is not None and args.default_kb not in args.kb:
        raise UsageError(f"--default-kb {args.default_kb} is not one of the --kb evaluated: {' '.join(args.kb)}")
    if args.default_kb is not None and config.knowledge_base is None:
        raise UsageError(f"--default-kb: the release {args.model} names no knowledge base, so it captions zero-shot")
    check_top_k_fits(max([args.top_k, *args.top_k_sweep]) if args.kb else 0, config)
