"""How much memory a request may take: refuse up front what cannot fit, naming the size."""
from __future__ import annotations

import os

import torch


def available_memory(device: torch.device) -> int | None:
    """Bytes the output may take: free device memory on a GPU, MemAvailable on a Linux host."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def check_fits(name: str, count: int, per_item: int, device: torch.device) -> None:
    """Refuse up front a request whose output alone cannot fit, naming the size it would need."""
    need = count * per_item
    have = available_memory(device)
    if have is not None and need > have:
        raise ValueError(f"{name}={count}: the output needs {_size(need)}, more than the {_size(have)} of "
                         f"memory available; ask for fewer, or write a dataset with `pycgn synth`")
