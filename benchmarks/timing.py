"""Timing helpers shared by the benchmarks: alternate the contenders so that each ratio is
measured on the same machine state."""

import statistics
import time


def time_alternating(runs, iters):
    """`{name: median seconds}` of each zero-argument callable in `runs` (a dict), after one warm-up
    call each, calling them in turn `iters` times."""
    for run in runs.values():
        run()
    times = {name: [] for name in runs}
    for _ in range(iters):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
