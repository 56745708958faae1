"""Read pickled datasets (CIFAR-10's python batches) without running code.

``pickle.load`` calls whatever the file names. A CIFAR batch needs only dicts, lists, bytes and
numpy arrays, so those are the only globals this unpickler will look up; any other name in the
file is refused with one line, before it is called.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from mimicry.errors import MimicryError

ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 2 pickles carry byte strings
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")


def load_arrays_pickle(path: str | Path, encoding: str = "latin1") -> Any:
    """Unpickle a file of plain containers and numpy arrays; refuse anything that would run code."""
    with open(path, "rb") as f:
        try:
            return _ArraysOnly(f, encoding=encoding).load()
        except pickle.UnpicklingError as error:
            raise MimicryError(f"refusing to read {path}: it asks to call {error}, which a dataset file never "
                               f"needs; replace the file with the original download") from None
