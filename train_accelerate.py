"""Train PairCap with accelerate (paper §3.2, §4.1): stage 1 projector alignment, stage 2 RAFT with IA3 and curriculum.

    accelerate launch train_accelerate.py --config configs/stage1_alignment.yaml
    accelerate launch train_accelerate.py --config configs/stage2_phase1.yaml
    accelerate launch train_accelerate.py --config configs/stage2_phase2.yaml
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml train_accelerate.py --config ...

Any setting of the YAML file can be overridden on the command line (`--learning_rate 5e-5`, `--resume`, ...).
"""

import sys

from paircap.training.config import parse_config
from paircap.training.loop import train


def main(argv: list[str] | None = None) -> int:
    train(parse_config(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
