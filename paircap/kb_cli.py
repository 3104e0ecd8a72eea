"""`paircap kb`: build, refine, tokenise, upgrade, push and list PairCap knowledge bases.

    paircap kb build --recipe base --root audiocaps=/data/AudioCaps --root clotho=/data/clotho \\
        --model ./paircap-release --output ./kb-base
    paircap kb build --recipe huge --root ... --output ./kb-huge --index-factory IVF4096,Flat
    paircap kb build --recipe huge --index-only ...    # embeddings only, no clip tokens
    paircap kb refine --kb ./kb-huge --train ./kb-base --output ./kb-refined-huge
    paircap kb tokens --kb ./kb-refined-huge --model ./trained-release --root clotho=/data/clotho ...
    paircap kb upgrade --kb ./old-kb --model ./paircap-release     # format 1 -> 2, in place
    paircap kb push ./kb-refined-huge org/refined-audio-kb
    accelerate launch -m paircap.cli kb build ...       # embedding split over processes / GPUs (also tokens, refine)

The work is done by the knowledge base library, `datasets_scripts`; this module only parses the commands.
"""

import argparse
import contextlib
import datetime
import functools
import json
from pathlib import Path

from datasets_scripts.kb_recipes import RECIPES, CorpusSpec, root_entry
from paircap.release_names import TRUST_REMOTE_CODE_HELP
from paircap.threads import add_threads_argument

KB_WAIT_HOURS = 12  # how long a process of a KB job waits for the others at a barrier
DTYPES = ["auto", "float32", "bfloat16", "float16"]
DTYPE_HELP = "the encoders' dtype (auto: bfloat16 on a GPU, float32 on CPU)"


def add_kb_commands(commands, common: argparse.ArgumentParser) -> None:
    """Add `kb` and its subcommands to the `paircap` subcommands `commands`; each takes the options of `common`."""
    kb = commands.add_parser(
        "kb",
        help="build, refine, tokenise, upgrade, push and list knowledge bases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_command = functools.partial(kb.add_subparsers(dest="kb_command", required=True).add_parser, parents=[common])

    build = add_command("build", help="read corpora, embed, index and write a knowledge base folder")
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", choices=[n for n, r in RECIPES.items() if r.corpora], help="a named KB")
    source.add_argument("--corpus", action="append", type=CorpusSpec.parse, help="NAME:SPLIT[:text], repeatable")
    build.add_argument(
        "--root", action="append", default=[], type=root_entry, help="CORPUS=PATH of a local corpus copy, repeatable"
    )
    build.add_argument("--model", required=True, help="PairCap release (hub id or folder) whose encoder embeds")
    build.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    build.add_argument("--output", required=True)
    build.add_argument("--index-factory", default="Flat", help="Flat (exact) or a faiss factory, e.g. IVF4096,Flat")
    build.add_argument("--work-dir", default=None, help="resumable intermediate files (default: beside --output)")
    build.add_argument("--batch-size", type=int, default=32)
    build.add_argument("--shard-size", type=int, default=1024)
    build.add_argument("--num-workers", type=int, default=2, help="audio decoding processes")
    build.add_argument("--overwrite", action="store_true", help="discard finished shards of an earlier run")
    build.add_argument("--index-only", action="store_true", help="embeddings and captions only, no clip tokens")
    build.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    add_threads_argument(build)
    build.set_defaults(run=run_build)

    refine = add_command("refine", help="refine a KB with the training pairs of another KB (paper §3.5)")
    refine.add_argument("--kb", required=True, help="knowledge base folder to refine (e.g. huge)")
    refine.add_argument("--train", required=True, help="knowledge base folder of the training pairs (e.g. base)")
    refine.add_argument("--output", required=True)
    refine.add_argument("--top-k", type=int, default=5, help="hits kept per training pair")
    refine.add_argument("--weight", type=float, default=0.5, help="fusion weight W of the pair-to-pair query")
    refine.add_argument("--device", default=None, help="exact torch search on this device instead of faiss")
    refine.add_argument("--index-factory", default="Flat")
    refine.add_argument("--work-dir", default=None, help="resumable search chunks (default: beside --output)")
    refine.add_argument(
        "--chunk-size", type=int, default=8192, help="training pairs per search (the unit split over processes)"
    )
    add_threads_argument(refine)
    refine.set_defaults(run=run_refine)

    tokens = add_command("tokens", help="(re)compute a KB's clip tokens with a release's token encoder")
    tokens.add_argument("--kb", required=True, help="knowledge base folder (its tokens.safetensors is replaced)")
    tokens.add_argument("--model", required=True, help="PairCap release whose audio tower makes the tokens")
    tokens.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    tokens.add_argument(
        "--root",
        action="append",
        default=[],
        type=root_entry,
        help="CORPUS=PATH where the KB's clips live (read only inside PATH; absolute=PATH allows absolute locations "
        "under PATH), repeatable",
    )
    tokens.add_argument("--work-dir", default=None, help="resumable shards (default: beside --kb)")
    tokens.add_argument("--batch-size", type=int, default=32)
    tokens.add_argument("--shard-size", type=int, default=1024)
    tokens.add_argument("--num-workers", type=int, default=2, help="audio decoding processes")
    tokens.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    add_threads_argument(tokens)
    tokens.set_defaults(run=run_tokens)

    upgrade = add_command("upgrade", help="convert a format-1 KB to format 2 in place")
    upgrade.add_argument("--kb", required=True)
    upgrade.add_argument("--model", required=True, help="the PairCap release that embedded the KB")
    upgrade.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    add_threads_argument(upgrade)
    upgrade.set_defaults(run=run_upgrade)

    push = add_command("push", help="upload a knowledge base folder as a hub dataset repo")
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.set_defaults(run=run_push)

    add_command("recipes", help="list the named knowledge bases").set_defaults(run=run_recipes)


def kb_accelerator():
    """The processes of a KB job (one outside `accelerate launch`). The others wait for the main process while it
    alone reads the corpora, trains the index or writes the KB, which at full size takes far longer than the default
    30-minute collective timeout; a process that dies still stops the job at once (the launcher ends the others)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=datetime.timedelta(hours=KB_WAIT_HOURS))])


def run_build(args: argparse.Namespace) -> int:
    from datasets_scripts.build_kb import build_knowledge_base, read_pairs
    from modeling_paircap.file_io_paircap import folder_lock
    from modeling_paircap.kb_format_paircap import METADATA_FILE
    from paircap.captioning import resolve_dtype
    from paircap.releases import load_encoders

    corpora = RECIPES[args.recipe].corpora if args.recipe else tuple(args.corpus)
    recipe = {"name": args.recipe or "custom", "corpora": [f"{c.name}:{c.split}" for c in corpora]}
    accelerator = kb_accelerator()
    roots = dict(args.root)
    # the output's write lock first: an unwritable output or a second writer fails before anything is read or loaded
    with folder_lock(args.output, METADATA_FILE) if accelerator.is_main_process else contextlib.nullcontext():
        dtype = resolve_dtype(args.dtype, accelerator.device)
        encoders, processor = load_encoders(args.model, accelerator.device, dtype, args.trust_remote_code)
        build_knowledge_base(
            functools.partial(read_pairs, corpora, roots),  # read by the main process alone
            encoders,
            processor,
            args.output,
            recipe,
            index_factory=args.index_factory,
            work_dir=args.work_dir,
            accelerator=accelerator,
            roots=roots,
            with_tokens=not args.index_only,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
        )
    if accelerator.is_main_process:
        print(f"wrote the knowledge base to {args.output}", flush=True)
    return 0


def run_refine(args: argparse.Namespace) -> int:
    from datasets_scripts.build_kb import refine_knowledge_base_folder

    accelerator = kb_accelerator()
    # under accelerate launch, each process searches on its own GPU
    device = str(accelerator.device) if args.device == "cuda" and accelerator.device.type == "cuda" else args.device
    refine_knowledge_base_folder(
        args.kb,
        args.train,
        args.output,
        args.top_k,
        args.weight,
        device,
        args.index_factory,
        args.work_dir,
        args.chunk_size,
        accelerator,
    )
    if accelerator.is_main_process:
        refinement = json.loads(Path(args.output, "paircap_kb.json").read_text())["recipe"]["refinement"]
        print(json.dumps(refinement, indent=2))
    return 0


def run_tokens(args: argparse.Namespace) -> int:
    from datasets_scripts.clip_tokens import refresh_tokens
    from datasets_scripts.embed import ERRORS_FILE
    from paircap.captioning import resolve_dtype
    from paircap.releases import load_encoders

    accelerator = kb_accelerator()
    device = accelerator.device
    encoders, processor = load_encoders(args.model, device, resolve_dtype(args.dtype, device), args.trust_remote_code)
    metadata = refresh_tokens(
        args.kb,
        encoders,
        processor,
        dict(args.root),
        work_dir=args.work_dir,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        accelerator=accelerator,
    )
    if accelerator.is_main_process:
        failed = len(Path(args.kb, ERRORS_FILE).read_text().splitlines())
        print(f"refreshed the tokens of {metadata.num_clips - failed} clips ({failed} failed: {ERRORS_FILE})")
    return 0


def run_upgrade(args: argparse.Namespace) -> int:
    from datasets_scripts.upgrade import upgrade_knowledge_base
    from paircap.releases import load_encoders

    encoders, _ = load_encoders(args.model, trust_remote_code=args.trust_remote_code)
    metadata = upgrade_knowledge_base(args.kb, encoders)
    print(f"upgraded {args.kb}: {metadata.num_pairs} pairs over {metadata.num_clips} clips, format 2")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from datasets_scripts.publish import push_kb_to_hub

    print(push_kb_to_hub(args.folder, args.repo_id, private=args.private))
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    for recipe in RECIPES.values():
        parts = (
            ", ".join(f"{c.name}:{c.split}" for c in recipe.corpora)
            or f"refine {recipe.refine_from} with {recipe.refine_against}"
        )
        print(f"{recipe.name:14s} {recipe.description}\n{'':14s} {parts}")
    return 0
