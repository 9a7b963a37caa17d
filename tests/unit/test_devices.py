import json

import pytest

from daemon.service import devices
from daemon.config import WorkersConfig
from daemon.errors import DeviceError


def inv(**kw):
    gpu = lambda i, name="GPU": devices.Gpu(index=i, name=name, memory_mb=80000)  # noqa: E731
    return devices.Inventory(torch_version="2.x", cuda=tuple(gpu(i) for i in range(kw.pop("cuda", 0))),
                             rocm=tuple(gpu(i) for i in range(kw.pop("rocm", 0))),
                             xpu=tuple(gpu(i) for i in range(kw.pop("xpu", 0))), mps=kw.pop("mps", False),
                             cpu_cores=kw.pop("cores", 8))


def test_auto_on_a_cpu_machine_gives_count_cpu_slots_sharing_the_cores():
    plans = devices.plan_slots(WorkersConfig(count=2), inv(cores=8))
    assert [p.device for p in plans] == ["cpu", "cpu"]
    assert [p.threads for p in plans] == [4, 4]
    assert plans[0].env["OMP_NUM_THREADS"] == "4" and plans[0].env["CUDA_VISIBLE_DEVICES"] == ""
    assert "auto" in plans[0].reason and plans[0].fallbacks == ()


def test_auto_binds_per_device_slots_to_each_gpu():
    plans = devices.plan_slots(WorkersConfig(count=5, per_device=2), inv(cuda=2, cores=16))
    assert [p.device for p in plans] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "0", "1", "1"]
    assert all(p.fallbacks == ("cpu",) for p in plans)
    assert devices.torch_device("cuda:1") == "cuda:0"  # the only GPU the slot can see


def test_gpu_slots_get_few_cpu_threads():
    # their host work is small torch operations: more threads only add wake-ups (BENCHMARKS.md)
    plans = devices.plan_slots(WorkersConfig(per_device=2), inv(cuda=1, cores=16))
    assert [p.threads for p in plans] == [devices.GPU_SLOT_THREADS] * 2
    assert plans[0].env["OMP_NUM_THREADS"] == str(devices.GPU_SLOT_THREADS)
    [lone] = devices.plan_slots(WorkersConfig(per_device=4), inv(cuda=1, cores=2))[:1]
    assert lone.threads == 1  # 2 cores for 4 slots: one thread each, never zero
    [explicit, *_] = devices.plan_slots(WorkersConfig(per_device=2, threads=6), inv(cuda=1, cores=16))
    assert explicit.threads == 6


def test_priority_order_is_respected():
    workers = WorkersConfig(device_priority=("mps", "cuda", "cpu"))
    plans = devices.plan_slots(workers, inv(cuda=1, mps=True))
    assert [p.device for p in plans] == ["mps"]
    assert plans[0].env["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"


def test_rocm_and_xpu_environment():
    [rocm] = devices.plan_slots(WorkersConfig(device="rocm", per_device=1), inv(rocm=1))
    assert rocm.env["HIP_VISIBLE_DEVICES"] == "0" and devices.torch_device(rocm.device) == "cuda:0"
    [xpu] = devices.plan_slots(WorkersConfig(device="xpu:0", per_device=1), inv(xpu=1))
    assert xpu.env["ZE_AFFINITY_MASK"] == "0" and devices.torch_device(xpu.device) == "xpu:0"


def test_default_is_two_slots_per_gpu():
    plans = devices.plan_slots(WorkersConfig(), inv(cuda=1))
    assert [p.device for p in plans] == ["cuda:0", "cuda:0"]


def test_explicit_cuda_on_a_cpu_machine_falls_back_with_the_reason():
    [plan] = devices.plan_slots(WorkersConfig(device="cuda"), inv())
    assert plan.device == "cpu" and plan.fallback_from == "cuda"
    assert "cuda is not available" in plan.reason


def test_missing_gpu_index_falls_back_to_the_next_kind():
    plans = devices.plan_slots(WorkersConfig(device="cuda:3", count=1), inv(cuda=1, mps=True))
    assert [p.device for p in plans] == ["mps"] and plans[0].fallback_from == "cuda:3"


def test_without_fallback_a_missing_device_stops_start_up():
    with pytest.raises(DeviceError, match="workers.device: cuda is not available.*fallback is false"):
        devices.plan_slots(WorkersConfig(device="cuda", fallback=False), inv())


def test_fallback_chain_walks_the_priority_list_to_the_cpu():
    assert devices.fallback_chain("cuda:1", ["cuda", "rocm", "xpu", "mps", "cpu"], inv(cuda=2, mps=True)) == \
        ("mps", "cpu")
    assert devices.fallback_chain("cpu", ["cuda", "cpu"], inv()) == ()


def test_explicit_thread_count_wins():
    [plan] = devices.plan_slots(WorkersConfig(threads=3), inv(cores=8))
    assert plan.threads == 3


def test_fake_inventory_from_the_environment():
    fake = {"cuda": [{"index": 0, "name": "Fake H100", "memory_mb": 81559}]}
    found = devices.detect(env={"SPKD_FAKE_DEVICES": json.dumps(fake)})
    assert found.cuda[0].name == "Fake H100"


def test_real_probe_runs_in_a_child_and_finds_the_cpu():
    found = devices.detect()
    assert found.torch_version and found.cpu_cores >= 1
    assert found.available("cpu")


def test_workers_wait_passively_for_their_openmp_threads():
    # Spinning OpenMP threads made a 1-s job take 60 s when anything else wanted the cores.
    for device in ("cpu", "cuda:0", "mps"):
        assert devices.worker_env(device, 2)["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize("wanted", ["auto", "cpu", "mps"])
def test_more_cpu_slots_than_cores_are_clamped_to_the_cores_saying_so(wanted):
    plans = devices.plan_slots(WorkersConfig(count=1000, device=wanted), inv(cores=4, mps=wanted == "mps"))
    assert len(plans) == 4 and all(p.threads == 1 for p in plans)
    assert "workers.count 1000 is more than this machine's 4 cores, so 4" in plans[0].reason
    assert len(devices.plan_slots(WorkersConfig(count=3), inv(cores=4))) == 3


def test_an_explicit_list_of_gpus_uses_only_those():
    plans = devices.plan_slots(WorkersConfig(device=("cuda:0", "cuda:2"), per_device=2), inv(cuda=4, cores=16))
    assert [p.device for p in plans] == ["cuda:0", "cuda:0", "cuda:2", "cuda:2"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "0", "2", "2"]
    assert plans[0].reason == "configured: cuda:0, cuda:2" and plans[0].fallback_from is None


def test_a_listed_gpu_that_is_missing_leaves_the_others_serving_or_stops_start_up():
    plans = devices.plan_slots(WorkersConfig(device=("cuda:1", "cuda:5"), per_device=1), inv(cuda=2))
    assert [p.device for p in plans] == ["cuda:1"]
    assert "cuda:5 is not available" in plans[0].reason and "only cuda:1" in plans[0].reason
    [cpu] = devices.plan_slots(WorkersConfig(device=("cuda:4", "cuda:5"), count=1), inv(cuda=2, cores=1))
    assert cpu.device == "cpu"  # the next kind, as for one missing index
    assert cpu.fallback_from == "cuda:4, cuda:5" and "cuda:4, cuda:5 are not available" in cpu.reason
    with pytest.raises(DeviceError, match="cuda:5 is not available"):
        devices.plan_slots(WorkersConfig(device=("cuda:0", "cuda:5"), fallback=False), inv(cuda=2))


def test_cuda_visible_devices_of_the_daemon_is_honoured():
    # torch in the probe sees only the visible cards, numbered from 0; each worker is shown
    # the physical card its slot's index stands for
    environ = {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert devices.worker_env("cuda:0", 2, environ=environ)["CUDA_VISIBLE_DEVICES"] == "2"
    assert devices.worker_env("cuda:1", 2, environ=environ)["CUDA_VISIBLE_DEVICES"] == "3"
    assert devices.worker_env("cuda:1", 2, environ={})["CUDA_VISIBLE_DEVICES"] == "1"
    rocm = devices.worker_env("rocm:1", 2, environ={"HIP_VISIBLE_DEVICES": "GPU-a,GPU-b"})
    assert rocm["HIP_VISIBLE_DEVICES"] == rocm["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    assert devices.worker_env("cpu", 2, environ=environ)["CUDA_VISIBLE_DEVICES"] == ""


def test_workers_device_list_is_validated_in_the_config(tmp_path):
    from daemon.config import from_dict
    from daemon.errors import ConfigError

    config = from_dict({"workers": {"device": ["cuda:0", "cuda:2"]}}, base_dir=tmp_path)
    assert config.workers.device == ("cuda:0", "cuda:2")
    for bad, says in ((["cuda:0", "cuda:0"], "twice"), (["cuda"], "by index"), ([], "empty"),
                      (["cuda:0", "rocm:1"], "one kind")):
        with pytest.raises(ConfigError, match=says):
            from_dict({"workers": {"device": bad}}, base_dir=tmp_path)
