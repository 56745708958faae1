from mimicry.callbacks.divergence import DivergenceGuard
from mimicry.callbacks.samples import SampleLogger

__all__ = ["DivergenceGuard", "SampleLogger"]
