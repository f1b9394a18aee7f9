"""The machine a benchmark ran on, for its printed results."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else platform.processor() / machine()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
