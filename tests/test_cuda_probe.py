"""Lightning's NVML flag is dropped only where NVML cannot load, and torch's answer stays the same."""
import os

import pytorch_lightning  # noqa: F401  (its import sets the flag)
import torch

from mimicry import cuda_probe


def test_the_flag_goes_only_where_nvml_cannot_load(monkeypatch):
    nvml_here = cuda_probe.nvml_loads()
    monkeypatch.setenv(cuda_probe.FLAG, "1")
    monkeypatch.setattr(cuda_probe, "nvml_loads", lambda: True)
    assert not cuda_probe.drop_failing_nvml_probe()
    assert os.environ[cuda_probe.FLAG] == "1"  # a machine with the driver keeps Lightning's fork-safe check

    available_with_flag = torch.cuda.is_available()
    monkeypatch.setattr(cuda_probe, "nvml_loads", lambda: False)
    assert cuda_probe.drop_failing_nvml_probe()
    assert cuda_probe.FLAG not in os.environ
    if not nvml_here:  # (with a driver, asking without the flag would initialise CUDA before the forked tests)
        assert torch.cuda.is_available() == available_with_flag  # the same answer, without the probe
    assert not cuda_probe.drop_failing_nvml_probe()  # nothing left to drop

