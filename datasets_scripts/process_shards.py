"""How the resumable jobs (embedding, token refresh, refinement) split their shards over the processes of
`accelerate launch`: process p computes the unfinished shards p, p + P, ... and marks each finished by a file that
every process can see (one filesystem shared by all nodes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator, PartialState
from tqdm.auto import tqdm

Processes = Accelerator | PartialState


def processes(accelerator: Processes | None) -> Processes:
    """`accelerator`, or the current `PartialState` (one process outside `accelerate launch`)."""
    return accelerator if accelerator is not None else PartialState()


def run_shards(
    work: Callable[[int], dict[str, int]],
    done: Callable[[int], Path],
    sizes: list[int],
    dist: Processes,
    progress: tuple[bool, str, str],
) -> dict[str, int]:
    """Compute this process's unfinished shards (p, p + P, ...; shard s is finished once `done(s)` exists) with
    `work(shard)`, which writes it and returns its counts; returns their sums. `progress`: whether to show a bar (on
    the main process, over its own shards), its description and unit."""
    mine = range(dist.process_index, len(sizes), dist.num_processes)
    todo = [shard for shard in mine if not done(shard).is_file()]
    show, desc, unit = progress
    bar = tqdm(
        total=sum(sizes[shard] for shard in mine),
        initial=sum(sizes[shard] for shard in mine if shard not in todo),
        unit=unit,
        desc=desc,
        disable=not (show and dist.is_main_process),
    )
    counts = Counter()
    with bar:
        for shard in todo:
            counts.update(work(shard))
            bar.update(sizes[shard])
    return dict(counts)


__all__ = ["Processes", "processes", "run_shards"]
