"""A description of the machine a benchmark ran on, stored next to its numbers."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or platform's guess where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine(device: torch.device, with_ray: bool = False) -> dict:
    """CPU, GPU and library versions; `with_ray`: Ray's version too (the benchmarks that run a
    cluster)."""
    import transformers

    machine = {
        "cpu_model": cpu_model(),
        "num_cpus": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "gpu_name": None,
        "cuda": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        machine["gpu_name"] = props.name
        machine["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        machine["cuda"] = torch.version.cuda
    if with_ray:
        import ray

        machine["ray"] = ray.__version__
    if "vllm" in sys.modules:  # a benchmark that ran vLLM's engine
        machine["vllm"] = sys.modules["vllm"].__version__
    return machine
