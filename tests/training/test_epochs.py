"""Each epoch of training draws that epoch's examples: accelerate's prepared loader sets its dataset's epoch to its
own pass count on every pass, which must agree with the run's epoch (a fresh loader per epoch once kept it at 0), and a
resumed epoch skips the batches already done."""

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Dataset

from paircap.training.data import LengthGroupedBatchSampler
from paircap.training.loop import TrainingProgress, epoch_batches


class EpochRecordingSet(Dataset):
    """Returns (index, the epoch it was told) for each item."""

    def __init__(self, size: int):
        self.size, self.epoch = size, -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, self.epoch


def test_each_epoch_and_a_resumed_one_see_the_run_epoch():
    accelerator = Accelerator(cpu=True)
    dataset = EpochRecordingSet(8)
    sampler = LengthGroupedBatchSampler([1] * 8, 2, seed=0, shuffle=True)
    loader = accelerator.prepare(DataLoader(dataset, batch_sampler=sampler, collate_fn=torch.tensor))
    for epoch in (0, 1, 5):
        batches = list(epoch_batches(accelerator, loader, sampler, TrainingProgress(epoch=epoch)))
        assert len(batches) == 4 and {int(batch[:, 1].unique()) for batch in batches} == {epoch}
        assert sorted(int(index) for batch in batches for index in batch[:, 0]) == list(range(8))
    orders = {
        epoch: [int(index) for batch in epoch_batches(accelerator, loader, sampler, TrainingProgress(epoch=epoch))
                for index in batch[:, 0]]
        for epoch in (2, 3)
    }  # fmt: skip
    assert orders[2] != orders[3]  # the sampler shuffles by epoch
    resumed = list(epoch_batches(accelerator, loader, sampler, TrainingProgress(epoch=3, batches_done_in_epoch=3)))
    assert len(resumed) == 1 and int(resumed[0][0, 1]) == 3
    assert [int(index) for index in resumed[0][:, 0]] == orders[3][6:]
