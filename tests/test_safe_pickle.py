"""Pickled dataset files are read without running code."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from mimicry.data.safe_pickle import load_arrays_pickle
from mimicry.errors import MimicryError


def test_a_cifar_style_batch_reads_back(tmp_path):
    batch = {"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), "labels": [3, 7],
             "filenames": [b"a.png", b"b.png"]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    loaded = load_arrays_pickle(path)
    assert np.array_equal(loaded["data"], batch["data"]) and loaded["labels"] == [3, 7]


class Payload:
    def __reduce__(self):
        return (os.system, ("touch should_not_exist",))


def test_a_file_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Payload()}))
    with pytest.raises(MimicryError, match="refusing to read .* it asks to call (posix|os).system"):
        load_arrays_pickle(path)
    assert not (tmp_path / "should_not_exist").exists()
