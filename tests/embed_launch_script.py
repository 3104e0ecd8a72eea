"""Run `embed_pairs` under `accelerate launch` (used by tests/test_embed.py).

Usage: embed_launch_script.py RELEASE_DIR PAIRS_PARQUET OUTPUT_DIR RESULTS_DIR SHARD_SIZE; each process saves the
Dataset it got back as RESULTS_DIR/result-{process_index}.parquet.
"""

import sys
from pathlib import Path

import pyarrow.parquet as pq
from accelerate import Accelerator
from datasets import Dataset

from datasets_scripts.embed import embed_pairs
from modeling_paircap.modeling_paircap import PairCapForConditionalGeneration
from modeling_paircap.processing_paircap import PairCapProcessor


def main(release: str, pairs_file: str, output_dir: str, results_dir: str, shard_size: str) -> None:
    accelerator = Accelerator()
    model = PairCapForConditionalGeneration.from_pretrained(release).to(accelerator.device)
    processor = PairCapProcessor.from_pretrained(release, trust_remote_code=True)
    dataset = embed_pairs(
        Dataset(pq.read_table(pairs_file)),
        model,
        processor,
        output_dir,
        shard_size=int(shard_size),
        num_workers=0,
        progress=False,
        accelerator=accelerator,
    )
    pq.write_table(dataset.data.table, Path(results_dir) / f"result-{accelerator.process_index}.parquet")


if __name__ == "__main__":
    main(*sys.argv[1:])
