"""Peak-memory probes: a snippet run in its own Python process, which prints how far its peak grew.

The peak is ``VmHWM`` from ``/proc/self/status``, the high-water mark of the probe's own address space: ``ru_maxrss``
would start at the pytest process's peak (Linux keeps it across fork and exec) and hide any growth below it.

glibc's malloc raises its mmap threshold whenever a large block is freed; later blocks then come from the heap, whose
fragmentation made the same probe peak anywhere from 32 to 64 MiB over runs (a CI failure). A fixed threshold
(``MALLOC_MMAP_THRESHOLD_``) maps every large block and unmaps it on free: the peaks then repeat to 0.2 MiB.
"""

from __future__ import annotations

import os
import subprocess
import sys

# Prepended to every probe: ``peak_kib()`` is the probe's high-water mark so far, in KiB.
PEAK_KIB = """
def peak_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1])
"""


def run_memory_probe(code: str, *args: str) -> list[float]:
    """Runs ``code`` (which may call ``peak_kib()``) with ``args`` as ``sys.argv[1:]``; returns the numbers it
    printed, one per line (the probes print peak growth in MiB)."""
    result = subprocess.run(
        [sys.executable, "-c", PEAK_KIB + code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"},
    )
    return [float(line) for line in result.stdout.split()]
