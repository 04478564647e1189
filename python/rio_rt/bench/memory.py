"""This machine's memory sizes: the caches to defeat (read-bandwidth buffer, flush between timed
calls) and the memory free for the benchmark's weights."""
from __future__ import annotations

from pathlib import Path

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def last_level_cache_bytes() -> int | None:
    """The largest cache the OS reports for CPU 0 (Linux sysfs); None where it does not say."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
            sizes.append(int(text.rstrip("KMG")) * _UNITS.get(text[-1], 1))
        except (OSError, ValueError, IndexError):
            continue
    return max(sizes, default=None)


def default_read_buffer_bytes() -> int:
    """2 GiB, or 4x the last-level cache where that is bigger: reads must come from memory."""
    return max(2 << 30, 4 * (last_level_cache_bytes() or 0))


def default_flush_bytes() -> int:
    """Twice the last-level cache (1 GiB when unknown): reading that much evicts the weights."""
    llc = last_level_cache_bytes()
    return 2 * llc if llc else 1 << 30


def available_memory_bytes() -> int | None:
    """Memory the OS can still hand out (Linux `MemAvailable`); None where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
