"""Read pickled datasets (CIFAR-10's python batches) without running code.

``pickle.load`` calls whatever the file names. A CIFAR batch needs only dicts, lists, bytes and
numpy arrays, so those are the only globals this unpickler will look up; any other name in the
file is refused with one line, before it is called. An array may not declare more than
``MAX_ARRAY_BYTES`` (a CIFAR batch holds 30 MB), so a small file cannot ask for the machine's memory.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mimicry.errors import MimicryError

ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 2 pickles carry byte strings
}


MAX_ARRAY_BYTES = 1 << 30


class _TooLarge(Exception):
    pass


class _Refused(pickle.UnpicklingError):
    pass


def _bounded(reconstruct: Any) -> Any:
    """numpy's array constructor, refusing a declared shape larger than the limit before allocating."""

    def build(subtype: Any, shape: Any, dtype: Any, *rest: Any) -> Any:
        count = 1
        for size in shape if isinstance(shape, tuple) else (shape,):
            count *= int(size)
        itemsize = max(1, np.dtype(dtype).itemsize)
        if count < 0 or count * itemsize > MAX_ARRAY_BYTES:
            raise _TooLarge(f"an array of shape {shape}")
        return reconstruct(subtype, shape, dtype, *rest)

    return build


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            found = super().find_class(module, name)
            return _bounded(found) if name == "_reconstruct" else found
        raise _Refused(f"{module}.{name}")


def load_arrays_pickle(path: str | Path, encoding: str = "latin1") -> Any:
    """Unpickle a file of plain containers and numpy arrays; refuse anything that would run code."""
    with open(path, "rb") as f:
        try:
            return _ArraysOnly(f, encoding=encoding).load()
        except _Refused as error:
            raise MimicryError(f"refusing to read {path}: it asks to call {error}, which a dataset file never "
                               f"needs; replace the file with the original download") from None
        except pickle.UnpicklingError as error:
            raise MimicryError(f"cannot read {path}: it is damaged ({error}); replace it with the original "
                               f"download") from None
        except _TooLarge as error:
            raise MimicryError(f"refusing to read {path}: it declares {error}, over the "
                               f"{MAX_ARRAY_BYTES >> 20} MiB a dataset array may hold; replace it with the original "
                               f"download") from None
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as error:
            raise MimicryError(f"cannot read {path}: it is damaged or not a pickled dataset "
                               f"({type(error).__name__}); replace it with the original download") from None
