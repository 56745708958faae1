from mimicry.callbacks.config_params import ConfigParams
from mimicry.callbacks.divergence import DivergenceGuard
from mimicry.callbacks.plain_updates import PlainUpdates
from mimicry.callbacks.progress_bar import ProgressBar
from mimicry.callbacks.progress_log import ProgressLog
from mimicry.callbacks.run_summary import SummaryRefresh
from mimicry.callbacks.samples import SampleLogger
from mimicry.callbacks.throughput import TrainingThroughput

__all__ = ["ConfigParams", "DivergenceGuard", "PlainUpdates", "ProgressBar", "ProgressLog", "SampleLogger", "SummaryRefresh", "TrainingThroughput"]
