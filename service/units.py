"""Byte sizes as the limits are configured and said: a leaf every layer may use."""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3


def human_size(size: int) -> str:
    """Say a byte count the way the limits are configured: '1 MiB', '2 GiB', '100 bytes'."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit:
            value = size / unit
            return f"{value:.0f} {name}" if size % unit == 0 else f"{value:.1f} {name}"
    return f"{size} bytes"
