"""A per-step cost Lightning's import leaves on machines without an NVIDIA driver.

lightning_fabric sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` when it is imported, so that asking whether
CUDA is there does not initialise CUDA (which would poison a later fork). torch then answers
``torch.cuda.is_available()`` by loading NVML first, and it does not remember a failure: without the
driver every call retries a ``dlopen`` that fails (about 0.4 ms) and falls back to the CUDA runtime's
count, the answer it gives without the flag. torch.optim asks on every optimizer step, which on CPU
cost 7% of a CartPole DQN. Where NVML cannot be loaded at all, the flag changes nothing but that cost.
"""
from __future__ import annotations

import ctypes
import os

FLAG = "PYTORCH_NVML_BASED_CUDA_CHECK"


def nvml_loads() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def drop_failing_nvml_probe() -> bool:
    """Unset the flag where NVML is not on this machine; returns whether it was dropped."""
    if os.environ.get(FLAG) == "1" and not nvml_loads():
        del os.environ[FLAG]
        return True
    return False
