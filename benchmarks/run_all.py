"""
Run the four benchmarks (KB embedding, retrieval, captioning, training) with the same size, device and output folder.
A failing benchmark is reported and the others still run; the exit status is 1 if any failed.

    python -m benchmarks.run_all [--size tiny|full] [--device cpu|cuda] [--output-dir benchmarks/results]
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from benchmarks import captioning, kb_embedding, retrieval, training
from benchmarks.common import parse_args

BENCHMARKS = {"kb_embedding": kb_embedding, "retrieval": retrieval, "captioning": captioning, "training": training}


def main(argv: Sequence[str] | None = None) -> int:
    """Run every benchmark; returns the number that failed."""
    args = parse_args(__doc__.strip().splitlines()[0], argv)
    common = ["--size", args.size, "--device", args.device, "--output-dir", str(args.output_dir)]
    failed = []
    for name, module in BENCHMARKS.items():
        print(f"=== {name}", flush=True)
        try:
            module.main(common)
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
