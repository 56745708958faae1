"""Image datamodules: shapes, ranges, labels, deterministic splits, and clear errors on bad input."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from image_fixtures import SHARED_DATA, needs_shared_mnist
from mimicry.data import images as image_data
from mimicry.data.images import CIFAR10DataModule, DigitsDataModule, ImageFolderDataModule, MNISTDataModule
from mimicry.errors import MimicryError

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def test_digits_batches_shapes_ranges_labels() -> None:
    data = DigitsDataModule(batch_size=32)
    assert data.spec() == {
        "kind": "image", "dataset": "digits", "channels": 1, "image_size": 16, "num_classes": 10, "value_range": "signed",
    }
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (32, 1, 16, 16) and images.dtype == torch.float32
    assert labels.dtype == torch.long
    assert images.min() >= -1 and images.max() <= 1 and images.min() < -0.99  # background is -1
    assert (len(data.train_images()), len(data.val_images()), len(data.test_images())) == (1437, 180, 180)
    assert set(data.train_labels().tolist()) == set(range(10))

    unit = DigitsDataModule(value_range="unit", image_size=8)
    x = unit.train_images()
    assert x.shape[1:] == (1, 8, 8) and x.min() == 0 and x.max() == 1


def test_split_is_deterministic_and_disjoint() -> None:
    a, b = DigitsDataModule(split_seed=3), DigitsDataModule(split_seed=3)
    assert torch.equal(a.val_images(), b.val_images())
    assert not torch.equal(a.val_images(), DigitsDataModule(split_seed=4).val_images())
    train, val, test = image_data.split_indices(1797, 0.1, seed=3, test_fraction=0.1)
    assert (len(train), len(val), len(test)) == (1437, 180, 180)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(1797))  # disjoint, nothing lost
    # The test split does not move when the validation share changes: it stays untouched.
    assert torch.equal(image_data.split_indices(1797, 0.3, seed=3, test_fraction=0.1)[2], test)
    assert torch.equal(a.test_images(), DigitsDataModule(split_seed=3, val_fraction=0.2).test_images())


def test_setup_twice_is_cached() -> None:
    data = DigitsDataModule()
    data.setup("fit")
    splits = data._splits
    data.setup("test")
    assert data._splits is splits


@needs_shared_mnist
def test_mnist_offline_test_split() -> None:
    data = MNISTDataModule(root=str(SHARED_DATA), source_split="test", download=False, batch_size=50)
    spec = data.spec()
    assert (spec["channels"], spec["image_size"], spec["num_classes"]) == (1, 28, 10)
    assert (len(data.train_images()), len(data.val_images()), len(data.test_images())) == (8000, 1000, 1000)
    assert len(data.test_dataloader().dataset) == 1000
    images, labels = next(iter(data.val_dataloader()))
    assert images.shape == (50, 1, 28, 28) and -1 <= images.min() and images.max() <= 1
    assert labels.min() >= 0 and labels.max() <= 9
    again = MNISTDataModule(root=str(SHARED_DATA), source_split="test", download=False)
    assert torch.equal(again.val_labels(), data.val_labels())  # same split every time

    small = MNISTDataModule(
        root=str(SHARED_DATA), source_split="test", download=False, image_size=16, limit=100, value_range="unit"
    )
    x = small.train_images()
    assert x.shape == (100, 1, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert len(small.val_images()) == 1000  # limit trims training images only


@needs_shared_mnist
def test_mnist_train_split_offline_says_use_source_split_test() -> None:
    with pytest.raises(MimicryError, match="data.source_split=test") as error:
        MNISTDataModule(root=str(SHARED_DATA), download=False).setup()
    assert "train-images-idx3-ubyte" in str(error.value)


def test_missing_root_names_files_and_folder(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(MimicryError) as error:
        MNISTDataModule(root=str(root), source_split="test", download=False).setup()
    message = str(error.value)
    assert "t10k-images-idx3-ubyte" in message and str(root / "MNIST" / "raw") in message
    assert "data.root" in message and "MIMICRY_DATA" in message
    with pytest.raises(MimicryError, match="data_batch_1"):
        CIFAR10DataModule(root=str(root), download=False).setup()


def test_root_defaults_to_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MIMICRY_DATA", str(tmp_path))
    assert MNISTDataModule().root == tmp_path


def test_bad_options() -> None:
    with pytest.raises(MimicryError, match="data.test_fraction"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(MimicryError, match="value_range"):
        DigitsDataModule(value_range="bytes")
    with pytest.raises(MimicryError, match="source_split"):
        MNISTDataModule(source_split="validation")


def _png(path: Path, size: tuple[int, int], mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_image_folder_flat_and_with_classes(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "flat" / f"{i}.png", (12, 12))
    flat = ImageFolderDataModule(path=str(tmp_path / "flat"), val_fraction=0.34)
    assert flat.spec()["num_classes"] == 1 and flat.spec()["channels"] == 1
    assert flat.train_labels().eq(0).all()
    assert (len(flat.train_images()), len(flat.val_images()), len(flat.test_images())) == (1, 1, 1)

    for name in ("cat", "dog"):
        for i in range(2):
            _png(tmp_path / "pets" / name / f"{i}.png", (8, 8), mode="RGB")
    pets = ImageFolderDataModule(path=str(tmp_path / "pets"), val_fraction=0.25, value_range="unit")
    spec = pets.spec()
    assert (spec["num_classes"], spec["channels"], spec["image_size"]) == (2, 3, 8)
    assert sorted(torch.cat([pets.train_labels(), pets.val_labels(), pets.test_labels()]).tolist()) == [0, 0, 1, 1]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(MimicryError, match="not a folder"):
        ImageFolderDataModule(path=str(tmp_path / "missing")).setup()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    with pytest.raises(MimicryError, match="no images"):
        ImageFolderDataModule(path=str(tmp_path / "empty")).setup()
    with pytest.raises(MimicryError, match="data.path"):
        ImageFolderDataModule().setup()

    _png(tmp_path / "mixed" / "a.png", (8, 8))
    _png(tmp_path / "mixed" / "b.png", (10, 6))
    with pytest.raises(MimicryError, match="data.image_size"):
        ImageFolderDataModule(path=str(tmp_path / "mixed")).setup()
    resized = ImageFolderDataModule(path=str(tmp_path / "mixed"), image_size=8, val_fraction=0.5)
    assert resized.spec()["image_size"] == 8


@pytest.mark.parametrize("name", ["digits", "mnist", "fashion_mnist", "cifar10", "image_folder"])
def test_config_shows_every_option(name: str) -> None:
    cfg = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    target = instantiate(cfg, _partial_=True).func
    options = set()
    for cls in target.__mro__:
        if cls.__module__ == image_data.__name__ and "__init__" in vars(cls):
            options |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert options == set(cfg.keys()) - {"_target_"}


def test_image_folder_must_be_square_unless_resized(tmp_path: Path) -> None:
    _png(tmp_path / "wide" / "a.png", (12, 8))
    _png(tmp_path / "wide" / "b.png", (12, 8))
    with pytest.raises(MimicryError, match="not square"):
        ImageFolderDataModule(path=str(tmp_path / "wide")).setup()
    assert ImageFolderDataModule(path=str(tmp_path / "wide"), image_size=8).spec()["image_size"] == 8
