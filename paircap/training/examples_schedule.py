"""The progressive examples schedule of stage 2 (MQ-Cap, arXiv 2410.10913): more interleaved retrieved pairs as
training goes on.

A schedule is one maximum per epoch, `[m_0, m_1, ..., m_last]`: epoch e draws each sample's count of retrieved pairs
from 0..m_e (0 being the zero-shot prompt), epochs past the list keep m_last. It is by epoch, not by optimizer step,
so a sample's count stays fixed for the whole epoch: length-grouped batches follow the epoch's counts, and a resumed
run (which restarts within an epoch) sees the same counts.
"""

from collections.abc import Sequence

__all__ = ["check_examples_schedule", "max_examples_at"]


def check_examples_schedule(schedule: Sequence[int], max_examples: int) -> tuple[int, ...]:
    """The schedule as a tuple, after checking it: integers in 0..max_examples, never decreasing, ending at
    max_examples (the most a sample ever gets). ValueError naming the problem otherwise."""
    values = tuple(schedule)
    if not values:
        raise ValueError("examples_schedule is empty: give one maximum per epoch, or leave it out")
    if not max_examples:
        raise ValueError(f"examples_schedule {list(values)} needs max_examples > 0 (retrieved pairs to schedule)")
    for epoch, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_examples:
            raise ValueError(
                f"examples_schedule: epoch {epoch} has maximum {value!r}; expected an integer in "
                f"0..max_examples={max_examples}"
            )
        if epoch and value < values[epoch - 1]:
            raise ValueError(
                f"examples_schedule must never decrease: epoch {epoch} has maximum {value} after {values[epoch - 1]}"
            )
    if values[-1] != max_examples:
        raise ValueError(
            f"examples_schedule must end at max_examples={max_examples} (the most a sample gets), ends at {values[-1]}"
        )
    return values


def max_examples_at(schedule: Sequence[int], epoch: int) -> int:
    """The most retrieved pairs a sample gets in `epoch` (epochs past the schedule keep its last maximum)."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return schedule[min(epoch, len(schedule) - 1)]
