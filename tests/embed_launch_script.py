"""Run `embed_pairs` under `accelerate launch` (used by tests/kb/test_embed.py).

Usage: embed_launch_script.py RELEASE_DIR PAIRS_PARQUET OUTPUT_DIR RESULTS_DIR SHARD_SIZE; each process saves what
it got back: the rows as RESULTS_DIR/rows-{process_index}.parquet, the clip table as clips-{process_index}.parquet and
its token store's file and clip count as tokens-{process_index}.json.
"""

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
from accelerate import Accelerator
from datasets import Dataset

from datasets_scripts.embed import embed_pairs
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor
from paircap.logs import log_progress_to_stderr


def main(release: str, pairs_file: str, output_dir: str, results_dir: str, shard_size: str) -> None:
    log_progress_to_stderr()  # as under `paircap kb build`
    accelerator = Accelerator()
    model = PairCapForConditionalGeneration.from_pretrained(release).to(accelerator.device)
    processor = PairCapProcessor.from_pretrained(release, trust_remote_code=True)
    embedded = embed_pairs(
        Dataset(pq.read_table(pairs_file)),
        model,
        processor,
        output_dir,
        shard_size=int(shard_size),
        num_workers=0,
        progress=False,
        accelerator=accelerator,
    )
    results, process = Path(results_dir), accelerator.process_index
    pq.write_table(embedded.rows.data.table, results / f"rows-{process}.parquet")
    pq.write_table(embedded.clips, results / f"clips-{process}.parquet")
    tokens = {"path": str(embedded.tokens.path), "num_clips": len(embedded.tokens)}
    (results / f"tokens-{process}.json").write_text(json.dumps(tokens))


if __name__ == "__main__":
    main(*sys.argv[1:])
