"""What the assigner benchmarks share: same-run timing with the sides alternated, peak memory of one
call measured in a fresh process, and the machine's load.

Timing: every side runs once per round, the order rotating from round to round, and a ratio is the
median over rounds of the per-round ratio, so a shared machine's drift hits both sides alike.
Memory: a case runs in a fresh ``python -c`` process of its own (nothing allocated by another case
stays in its heap); the figure is the growth of the peak resident set over the resident set just
before the call (the peak is reset first, Linux ``clear_refs``), or of ``ru_maxrss`` where the
reset is not allowed.
Contention (``busy``): N background processes, each a pure-Python spin on one core, for the duration of a
measurement, as a training run's loader workers or other jobs keep a machine's cores busy.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def status_mib(key: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def reset_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0: ``clear_refs`` 5); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_of(fn: Callable[[], object]) -> dict[str, float]:
    """Run ``fn`` once: its wall time (s), the growth of the peak RSS over the RSS before it (MiB), and
    the process's whole peak RSS (MiB, ``ru_maxrss``, what an out-of-memory killer would see)."""
    base = status_mib("VmRSS")
    exact = reset_peak()
    base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    growth = status_mib("VmHWM") - base if exact else process_peak - base_max
    return {"seconds": seconds, "peak_growth_mib": growth, "process_peak_mib": process_peak}


def run_isolated(script: str, args: list[str], python: str | None = None) -> dict:
    """Run ``benchmarks/<script> --child ARGS`` in a fresh process; it prints one JSON line last."""
    cmd = [python or sys.executable, str(HERE / script), "--child", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternate(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each function per round, after one warm-up call each; the order rotates every round."""
    names = list(fns)
    for name in names:
        fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``a``'s time over ``b``'s."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def load_line() -> str:
    """The machine's load while measuring (a shared machine: other people's jobs are running)."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


SPIN = "while True: pass"  # one busy core per process, no imports (starts in ~20 ms)


@contextmanager
def busy(n: int) -> Iterator[None]:
    """Within the block, ``n`` background processes each spin one core; they are ended (by their own ids)
    on leaving, also when the block raises."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        time.sleep(0.2 if n else 0.0)  # let them start and reach the scheduler
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def alternate_busy(fns: dict[str, Callable[[], object]], rounds: int, n_busy: int, cpu: dict | None = None
                   ) -> tuple[dict[str, list[float]], dict[str, list[float]], list[str]]:
    """Each round times every function quiet (no background process of ours) and then under ``busy(n_busy)``,
    the order of the functions rotating from round to round (one warm-up call each first).

    Returns the quiet and busy seconds per function (one per round) and the load line of each phase; a
    ``cpu`` dict given is filled with ``cpu[name]["quiet" | "busy"]``: this process's CPU seconds per call
    (every thread's, ``time.process_time``; on one thread, the call's work: wall / CPU is the share of a
    core it got, pool threads waiting at a parallel region spin and add CPU)."""
    names = list(fns)
    for name in names:
        fns[name]()
    quiet: dict[str, list[float]] = {name: [] for name in names}
    loaded: dict[str, list[float]] = {name: [] for name in names}
    loads: list[str] = []
    if cpu is not None:
        cpu.update({name: {"quiet": [], "busy": []} for name in names})
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for times, n in ((quiet, 0), (loaded, n_busy)):
            with busy(n):
                for name in order:
                    c0, t0 = time.process_time(), time.perf_counter()
                    fns[name]()
                    times[name].append(time.perf_counter() - t0)
                    if cpu is not None:
                        cpu[name]["busy" if n else "quiet"].append(time.process_time() - c0)
                loads.append(f"round {r + 1} {'busy' if n else 'quiet'}: {load_line()}")
    return quiet, loaded, loads
