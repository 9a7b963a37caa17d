"""What torch says about this machine's devices, and device names as torch sees them.

The supervisor must never initialise CUDA, so it never imports this module's torch:
daemon.service.devices runs `python -m daemon.engine.device_probe` in a short-lived
child and reads the JSON line it prints. Importing the module itself is cheap (torch
is imported only inside `probe`).
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

__all__ = ["cpu_cores", "probe", "torch_device"]


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset/cgroup pinning
    except AttributeError:
        return os.cpu_count() or 1


def probe() -> dict[str, Any]:
    """Runs in the short-lived child only: imports torch and asks it. The result is
    what daemon.service.devices.Inventory is built from."""
    info: dict[str, Any] = {"cpu_cores": cpu_cores(), "platform": f"{platform.system()} {platform.machine()}"}
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - report any import failure as "no torch"
        info["probe_error"] = f"torch not importable: {exc}"
        return info
    info["torch_version"] = torch.__version__
    gpus: list[dict[str, Any]] = []
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpus.append({"index": i, "name": props.name, "memory_mb": int(props.total_memory // 2**20)})
    except Exception as exc:  # noqa: BLE001
        info["probe_error"] = f"CUDA probe failed: {exc}"
    # A ROCm build of torch exposes AMD GPUs through the cuda API.
    info["rocm" if getattr(torch.version, "hip", None) else "cuda"] = gpus
    try:
        xpu = getattr(torch, "xpu", None)
        if xpu is not None and xpu.is_available():
            info["xpu"] = [{"index": i, "name": xpu.get_device_name(i), "memory_mb": None}
                           for i in range(xpu.device_count())]
    except Exception as exc:  # noqa: BLE001
        info["probe_error"] = f"XPU probe failed: {exc}"
    try:
        mps = getattr(torch.backends, "mps", None)
        info["mps"] = bool(mps and mps.is_built() and mps.is_available())
    except Exception:  # noqa: BLE001
        info["mps"] = False
    return info


def torch_device(device: str) -> str:
    """The torch device string inside a worker whose environment came from
    daemon.service.devices.worker_env: the slot's GPU is the only visible one, so it is
    always index 0."""
    kind = device.partition(":")[0]
    if kind in ("cuda", "rocm"):
        return "cuda:0"
    if kind == "xpu":
        return "xpu:0"
    return kind


if __name__ == "__main__":
    print(json.dumps(probe()))
