"""Device detection, slot planning and the per-slot environment.

The supervisor must never initialise CUDA (a forked or long-lived parent holding a
CUDA context breaks children and pins GPU memory), so detection runs torch in a
short-lived child process (`python -m daemon.engine.device_probe`: only daemon/engine/
imports torch) and reads its JSON.

Each worker slot is bound to exactly one device. A GPU slot sees only its own GPU
(`CUDA_VISIBLE_DEVICES=N`, so inside the worker it is always `cuda:0`); CPU slots
share the cores evenly so that they don't fight over them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from daemon.config import DEVICE_KINDS, WorkersConfig
from daemon.engine.device_probe import cpu_cores, torch_device
from daemon.errors import DeviceMissingError

__all__ = ["GPU_KINDS", "GPU_SLOT_THREADS", "Gpu", "Inventory", "SlotPlan", "cpu_cores", "detect", "device_kind",
           "fallback_chain", "physical_index", "plan_slots", "torch_device", "worker_env"]

PROBE_TIMEOUT_SECONDS = 120.0
GPU_KINDS = ("cuda", "rocm", "xpu")
# CPU threads of a GPU slot (fewer where the cores run out). Its host work is many small
# torch operations (fbank, the VAD's frame loop, CIF bookkeeping) that more OpenMP
# threads hardly speed up: two slots on one H200 (16 cores) took 5.2 s for the same
# 24 files with 2 or 4 threads each and 5.7 s with 1; with other processes wanting the
# cores (a decoder that spun 16 threads), 7.4 s with 2, 8.7 s with 4 and 9.3 s with 8
# (BENCHMARKS.md, issue 19). Two leave the rest of the cores to other slots and programs.
GPU_SLOT_THREADS = 2


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mb: int | None = None


@dataclass(frozen=True)
class Inventory:
    """What the machine offers, as seen by torch in a probe process."""

    torch_version: str | None = None
    cuda: tuple[Gpu, ...] = ()
    rocm: tuple[Gpu, ...] = ()
    xpu: tuple[Gpu, ...] = ()
    mps: bool = False
    cpu_cores: int = 1
    platform: str = ""
    probe_error: str | None = None

    def available(self, kind: str) -> bool:
        if kind in GPU_KINDS:
            return bool(getattr(self, kind))
        if kind == "mps":
            return self.mps
        return kind == "cpu"

    def gpus(self, kind: str) -> tuple[Gpu, ...]:
        return getattr(self, kind) if kind in GPU_KINDS else ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SlotPlan:
    slot: int
    device: str  # "cuda:1", "rocm:0", "xpu:0", "mps", "cpu"
    threads: int
    reason: str
    # Devices this slot falls back to, in order, when its device cannot boot.
    fallbacks: tuple[str, ...] = ()
    fallback_from: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return device_kind(self.device)


def device_kind(device: str) -> str:
    return device.partition(":")[0]


# --- detection ------------------------------------------------------------------------

def _inventory_from(info: dict[str, Any]) -> Inventory:
    def gpus(key: str) -> tuple[Gpu, ...]:
        return tuple(Gpu(**g) for g in info.get(key) or ())

    return Inventory(torch_version=info.get("torch_version"), cuda=gpus("cuda"), rocm=gpus("rocm"),
                     xpu=gpus("xpu"), mps=bool(info.get("mps")), cpu_cores=int(info.get("cpu_cores") or 1),
                     platform=info.get("platform", ""), probe_error=info.get("probe_error"))


def detect(*, env: dict[str, str] | None = None) -> Inventory:
    """Probe devices in a child process; never touches CUDA in this one.

    `SPKD_FAKE_DEVICES` (JSON in the probe's output format) replaces the probe, so
    tests can plan for hardware this machine lacks."""
    environ = dict(os.environ if env is None else env)
    fake = environ.get("SPKD_FAKE_DEVICES")
    if fake:
        return _inventory_from({"cpu_cores": cpu_cores(), **json.loads(fake)})
    try:
        result = subprocess.run([sys.executable, "-m", "daemon.engine.device_probe"], capture_output=True,
                                text=True, timeout=PROBE_TIMEOUT_SECONDS, env=environ, check=False)
        if result.returncode != 0:
            raise RuntimeError((result.stderr.strip().splitlines() or ["probe failed"])[-1])
        return _inventory_from(json.loads(result.stdout.strip().splitlines()[-1]))
    except Exception as exc:  # noqa: BLE001 - a failed probe means "CPU only", with the reason kept
        return Inventory(cpu_cores=cpu_cores(), platform=f"{platform.system()} {platform.machine()}",
                         probe_error=f"device probe failed: {exc}")


# --- planning ---------------------------------------------------------------------------

def _expand(kind: str, inventory: Inventory, *, index: int | None = None) -> list[str]:
    """The concrete devices of one kind (one per GPU), [] when the kind is absent."""
    if kind in GPU_KINDS:
        found = inventory.gpus(kind)
        if index is not None:
            return [f"{kind}:{index}"] if any(g.index == index for g in found) else []
        return [f"{kind}:{g.index}" for g in found]
    return [kind] if inventory.available(kind) else []


def plan_slots(workers: WorkersConfig, inventory: Inventory) -> list[SlotPlan]:
    """Bind each slot to a device. `auto` takes the first kind in `device_priority`
    the machine has; on GPUs, `per_device` slots per GPU, else `count` slots.
    An explicit device that is missing falls back along the priority list when
    `fallback` is on, and raises DeviceMissingError when it is off."""
    priority = [k for k in workers.device_priority if k in DEVICE_KINDS] or list(DEVICE_KINDS)
    wanted = workers.device
    chosen: list[str] = []
    reason = ""
    fallback_from: str | None = None
    if wanted == "auto":
        for kind in priority:
            chosen = _expand(kind, inventory)
            if chosen:
                reason = f"auto: first available in device_priority ({kind})"
                break
        if not chosen:
            chosen, reason = ["cpu"], "auto: nothing in device_priority is available; using cpu"
    else:
        listed = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        shown = wanted if isinstance(wanted, str) else ", ".join(listed)
        kind = listed[0].partition(":")[0]
        missing: list[str] = []
        for device in listed:
            _, _, index_text = device.partition(":")
            found = _expand(kind, inventory, index=int(index_text) if index_text else None)
            chosen += found
            missing += [] if found else [device]
        reason = f"configured: {shown}"
        if missing:
            why = f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not available on this machine" + (
                f" ({inventory.probe_error})" if inventory.probe_error else "")
            if not workers.fallback:
                raise DeviceMissingError(f"workers.device: {why}, and workers.fallback is false")
            if chosen:
                # Some of the listed cards are there: serve on those rather than leave them for the CPU.
                reason = f"configured: {shown}; {why}, so only {', '.join(chosen)}"
            else:
                start = priority.index(kind) + 1 if kind in priority else 0
                for next_kind in [*priority[start:], "cpu"]:
                    chosen = _expand(next_kind, inventory)
                    if chosen:
                        break
                reason, fallback_from = f"fallback: {why}; using {chosen[0]}", shown
    kind = device_kind(chosen[0])
    if kind in GPU_KINDS:
        devices = [d for d in chosen for _ in range(workers.per_device)]
    else:
        # One core per CPU (or MPS) slot at least: beyond that, more workers only share the
        # same cores, each with its own copy of the models in memory.
        count = min(workers.count, max(1, inventory.cpu_cores))
        if count < workers.count:
            reason += (f"; workers.count {workers.count} is more than this machine's {inventory.cpu_cores} cores, "
                       f"so {count}")
        devices = [chosen[0]] * count
    cpu_slots = sum(1 for d in devices if device_kind(d) in ("cpu", "mps"))
    default_threads = max(1, inventory.cpu_cores // max(1, cpu_slots)) if cpu_slots else 1
    plans = []
    for slot, device in enumerate(devices):
        threads = workers.threads or (default_threads if device_kind(device) in ("cpu", "mps") else
                                      max(1, min(GPU_SLOT_THREADS, inventory.cpu_cores // max(1, len(devices)))))
        fallbacks = fallback_chain(device, priority, inventory) if workers.fallback else ()
        plans.append(SlotPlan(slot=slot, device=device, threads=threads, reason=reason, fallbacks=fallbacks,
                              fallback_from=fallback_from, env=worker_env(device, threads)))
    return plans


def fallback_chain(device: str, priority: Sequence[str], inventory: Inventory) -> tuple[str, ...]:
    """Where a slot goes when `device` cannot boot: the next available kinds after its
    own in the priority list, ending at the CPU (the GPU's own index is kept when the
    next kind is a GPU kind with such an index)."""
    kind, _, index = device.partition(":")
    start = priority.index(kind) + 1 if kind in priority else len(priority)
    chain: list[str] = []
    for next_kind in priority[start:]:
        options = _expand(next_kind, inventory)
        if not options:
            continue
        same_index = f"{next_kind}:{index}"
        chain.append(same_index if same_index in options else options[0])
    if kind != "cpu" and "cpu" not in chain:
        chain.append("cpu")
    return tuple(chain)


def physical_index(kind: str, index: str, environ: Mapping[str, str] | None = None) -> str:
    """The index a child process must be shown for torch's `kind:index` as this process
    sees it. Torch numbers only the GPUs that `CUDA_VISIBLE_DEVICES` (ROCm: also
    `HIP_VISIBLE_DEVICES`) lets it see, from 0; a worker's own variable is read against the
    whole machine, so `cuda:1` under `CUDA_VISIBLE_DEVICES=2,3` is GPU `3`."""
    environ = os.environ if environ is None else environ
    names = ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES") if kind == "rocm" else ("CUDA_VISIBLE_DEVICES",)
    for name in names:
        visible = [v.strip() for v in environ.get(name, "").split(",") if v.strip()]
        if visible:
            position = int(index or "0")
            return visible[position] if position < len(visible) else index or "0"
    return index or "0"


def worker_env(device: str, threads: int, *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment a worker sets before importing torch (`environ`: this process's, whose
    visible-device variables the slot's device index is relative to)."""
    kind, _, index = device.partition(":")
    if kind in ("cuda", "rocm"):
        index = physical_index(kind, index, environ)
    env = {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        # OpenMP threads spin while they wait by default; when anything else wants the
        # cores (another slot, the user's own programs) that turns a 1-s job into a
        # 60-s one (measured on 2 cores). Passive waiting costs little when idle.
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if kind in ("cuda", "rocm"):
        env["CUDA_VISIBLE_DEVICES"] = index
        if kind == "rocm":
            env["HIP_VISIBLE_DEVICES"] = index
    elif kind == "xpu":
        env["ZE_AFFINITY_MASK"] = index or "0"
    elif kind == "mps":
        # FunASR uses a few operators MPS lacks; run those on the CPU instead of crashing.
        env["PYTORCH_ENABLE_MPS_FALLBACK"] = "1"
    else:
        # A CPU slot must not see GPUs (it would otherwise create a CUDA context on load).
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


if __name__ == "__main__":
    print(json.dumps(detect().to_dict(), indent=2))
