"""What the benchmark scripts share: timing a step after warm-up."""

import time


def timed(step, repeats: int) -> float:
    """Seconds per call of ``step``, after two warm-up calls (which also compile, under torch.compile)."""
    step()
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats
