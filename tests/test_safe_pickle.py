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


def test_cifar10_batches_are_read_through_the_safe_loader(tmp_path):
    from mimicry.data.images import CIFAR10DataModule

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    data = CIFAR10DataModule(root=str(tmp_path), download=False, batch_size=2)
    data.setup()
    assert data.spec()["channels"] == 3 and data.spec()["image_size"] == 32
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload()}))
    with pytest.raises(MimicryError, match="refusing to read"):
        CIFAR10DataModule(root=str(tmp_path), download=False).setup()
