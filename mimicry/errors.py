"""The one exception type a user should ever see: a short message that names the problem and the fix."""


class MimicryError(Exception):
    """Bad input (config, data, checkpoint). The CLI prints it as one line and exits non-zero."""


class DivergedError(MimicryError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""
