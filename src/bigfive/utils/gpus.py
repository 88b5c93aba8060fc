"""One GPU per worker process on a multi-GPU node: ``ablate --all --jobs N`` workers and ``bigfive tune`` workers.

A worker claims a *slot* on one device and sets ``CUDA_VISIBLE_DEVICES`` to that device before CUDA starts in
the process. Slots are taken round-robin over the visible devices — slot 0 of every device, then slot 1 of
every device, ... — so N workers on G GPUs spread as evenly as N allows, whoever starts them: the claims are
``flock`` locks on files in :func:`lock_dir`, which the kernel releases when a worker exits, so a crashed
worker frees its GPU. With one device or none, or where the scheduler already gave the job one GPU (Slurm's
``--gres=gpu:1``), nothing changes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("bigfive")

_HELD: list[int] = []  # the claimed slot's open file descriptor: the lock lives as long as the process


def visible_devices(env: dict[str, str] | None = None) -> list[str]:
    """The devices this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every GPU torch counts."""
    env = os.environ if env is None else env
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    # counted through NVML: CUDA itself is not initialised, so the variable set below still takes effect
    return [str(i) for i in range(torch.cuda.device_count())]


def slot_order(devices: list[str], max_per_device: int) -> list[tuple[str, int]]:
    """(device, slot) in the order workers take them: round-robin over devices."""
    return [(d, k) for k in range(max_per_device) for d in devices]


def lock_dir() -> Path:
    """Per node and user (locks only mean something between processes of one machine)."""
    return Path(tempfile.gettempdir()) / f"bigfive-gpu-slots-{os.getuid()}"


def claim(devices: list[str], directory: Path | None = None, max_per_device: int = 64) -> str | None:
    """Lock the first free (device, slot) and return the device; None when every slot is taken."""
    import fcntl

    directory = directory or lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for device, slot in slot_order(devices, max_per_device):
        fd = os.open(directory / f"gpu{device}.slot{slot}", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _HELD.append(fd)
        return device
    return None


def pin_gpu(device: str = "auto", directory: Path | None = None) -> str | None:
    """Give this process one of the visible GPUs (see the module doc); returns it, or None if nothing changed.

    ``device`` is the run's configured device: only ``auto`` and ``cuda`` are pinned, since narrowing
    CUDA_VISIBLE_DEVICES would make an explicit ``cuda:N`` name a GPU that no longer exists."""
    devices = visible_devices()
    if device not in ("auto", "cuda") or len(devices) < 2 or _HELD:
        return None
    device = claim(devices, directory)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
        log.info("this worker uses GPU %s of %s", device, ",".join(devices))
    return device
