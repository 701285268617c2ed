"""The resumable training sampler: sharding by process, continuing after the batches already seen."""

from madm_pl.data.resumable import ResumableSampler


def test_sampler_shards_processes_and_starts_after_seen_batches() -> None:
    seen = {"batches": 0}
    samplers = [
        ResumableSampler(range(100), 3, 2, lambda: seen["batches"], rank=rank, world_size=2)
        for rank in (0, 1)
    ]
    assert [list(s) for s in samplers] == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert len(samplers[0]) == 6
    seen["batches"] = 3  # the next epoch or a resumed run continues after 3 batches per process
    assert list(samplers[1]) == [14, 15, 18, 19, 22, 23]
