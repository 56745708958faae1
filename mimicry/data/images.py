"""Image datamodules: every dataset becomes `(images, labels)` batches in the value range a task asks for.

Images are held in memory as uint8 (N, C, H, W) after resizing, and converted per batch to
`value_range`: "signed" → [-1, 1] (diffusion, GAN, the feature net), "unit" → [0, 1]
(image-ar tokenizers quantize from this). Tasks never re-normalise on their own.

One base class does splitting, limiting, loading and batching; each dataset only says how
to read its files (`_read`), so adding a dataset is one small subclass.

Three splits: `train` (models and the metrics' feature net train on it), `val` (validation
loss, checkpoint choice, the reference images of the metrics logged during training) and `test`
(held out: nothing trains or chooses on it; `mimicry eval` scores against it). A dataset with an
official test split keeps it as `test` and carves `val` out of its training files; a dataset of
one source (digits, a folder, MNIST's test files offline) is cut three ways by a seeded permutation.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from mimicry.data.safe_pickle import load_arrays_pickle
from mimicry.errors import MimicryError

VALUE_RANGES = ("signed", "unit")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def default_root() -> str:
    return os.environ.get("MIMICRY_DATA", "data")


def to_value_range(images_u8: Tensor, value_range: str) -> Tensor:
    """uint8 images → float in the named range."""
    unit = images_u8.float() / 255.0
    return unit * 2 - 1 if value_range == "signed" else unit


def to_unit(images: Tensor, value_range: str) -> Tensor:
    """Float images in `value_range` → [0, 1] (for saving PNGs and for tokenizers)."""
    return (images + 1) / 2 if value_range == "signed" else images


def to_signed(images: Tensor, value_range: str) -> Tensor:
    """Float images in `value_range` → [-1, 1] (what the feature net expects)."""
    return images if value_range == "signed" else images * 2 - 1


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of uint8 (N, C, H, W) to size×size; antialiased so downsizing does not alias."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for chunk in images.split(4096):  # bounded memory for 50k-image datasets
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(resized.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def split_indices(n: int, val_fraction: float, seed: int, test_fraction: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded permutation cut into (train, val, test) index sets; the same seed gives the same split.

    Test images come first in the permutation, so changing val_fraction never moves an image
    into or out of the test split."""
    n_test = round(n * test_fraction)
    if test_fraction > 0 and n >= 3:
        n_test = max(1, n_test)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n - n_test >= 2:
        n_val = max(1, n_val)
    if n - n_val - n_test < 1:
        raise MimicryError(f"too few images ({n}) to split with val_fraction={val_fraction} and "
                           f"test_fraction={test_fraction}: need at least one to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_test + n_val:], order[n_test : n_test + n_val], order[:n_test]


class ImageDataModule(pl.LightningDataModule):
    """Shared logic. Subclasses set `name` and `num_classes` and implement `_read`."""

    name = "images"
    num_classes = 1

    def __init__(
        self,
        root: str | None = None,
        image_size: int | None = None,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        value_range: str = "signed",
        limit: int | None = None,
        split_seed: int = 0,
    ) -> None:
        super().__init__()
        if value_range not in VALUE_RANGES:
            raise MimicryError(f"data.value_range={value_range!r} is not one of {list(VALUE_RANGES)}")
        if not 0 <= val_fraction < 1:
            raise MimicryError(f"data.val_fraction={val_fraction} must be in [0, 1)")
        if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise MimicryError(f"data.test_fraction={test_fraction} must be in [0, 1) and leave images to train on "
                               f"(val_fraction + test_fraction < 1)")
        if image_size is not None and image_size < 1:
            raise MimicryError(f"data.image_size={image_size} must be a positive number of pixels")
        self.root = Path(root if root is not None else default_root()).expanduser()
        self.image_size = image_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.num_workers = num_workers
        self.value_range = value_range
        self.limit = limit
        self.split_seed = split_seed
        self._splits: dict[str, tuple[Tensor, Tensor]] | None = None

    # --- what a dataset implements -------------------------------------------------------
    def _read(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Return {"train": (uint8 images, labels), "test": ...} for datasets with an official test
        split (val is carved out of train here), or only {"all": ...} to be cut three ways here."""
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:  # cheap on the second call (fit, then test, then spec)
            return
        splits = self._read()
        if "all" in splits:
            images, labels = splits.pop("all")
            parts = split_indices(len(images), self.val_fraction, self.split_seed, self.test_fraction)
            splits = {name: (images[idx], labels[idx]) for name, idx in zip(("train", "val", "test"), parts)}
        else:  # an official test split: val comes out of the training files
            images, labels = splits["train"]
            train_idx, val_idx, _ = split_indices(len(images), self.val_fraction, self.split_seed)
            splits = {"train": (images[train_idx], labels[train_idx]), "val": (images[val_idx], labels[val_idx]),
                      "test": splits["test"]}
        if self.image_size is not None:
            splits = {k: (resize_uint8(x, self.image_size), y) for k, (x, y) in splits.items()}
        if self.limit is not None:
            x, y = splits["train"]
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.split_seed))[: self.limit]
            splits["train"] = (x[keep], y[keep])
        self._splits = splits

    def spec(self) -> dict:
        """What a task needs to know to build its model: plain python values only."""
        self.setup()
        images = self._splits["train"][0]
        return {
            "kind": "image",
            "dataset": self.name,
            "channels": int(images.shape[1]),
            "image_size": int(images.shape[-1]),
            "num_classes": int(self.num_classes),
            "value_range": self.value_range,
        }

    def options(self) -> dict:
        """The constructor arguments this datamodule was built with (each is kept as an attribute)."""
        names = set()
        for cls in type(self).__mro__:
            if issubclass(cls, ImageDataModule) and "__init__" in vars(cls):
                names |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        return {name: getattr(self, name) for name in sorted(names)}

    def variant(self, **changes) -> "ImageDataModule":
        """The same dataset with some options changed (e.g. the feature net wants all images, in [-1, 1])."""
        options = {**self.options(), **changes}
        options["root"] = str(options["root"])
        return type(self)(**options)

    def identity(self) -> str:
        """A short file-safe name that tells datasets apart on disk (the feature-net cache)."""
        self.setup()
        return (f"{self.name}_{self.spec()['image_size']}px_split{self.split_seed}"
                f"-{self.val_fraction:g}-{self.test_fraction:g}")

    def _images(self, split: str) -> Tensor:
        self.setup()
        return to_value_range(self._splits[split][0], self.value_range)

    def train_images(self) -> Tensor:
        """All training images as floats in `value_range` (k-means codebooks, memorization, FID reference)."""
        return self._images("train")

    def val_images(self) -> Tensor:
        return self._images("val")

    def test_images(self) -> Tensor:
        """The held-out test images: nothing trains or chooses checkpoints on them."""
        return self._images("test")

    def train_labels(self) -> Tensor:
        self.setup()
        return self._splits["train"][1]

    def val_labels(self) -> Tensor:
        self.setup()
        return self._splits["val"][1]

    def test_labels(self) -> Tensor:
        self.setup()
        return self._splits["test"][1]

    def _collate(self, items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        images = torch.stack([x for x, _ in items])
        labels = torch.stack([y for _, y in items])
        return to_value_range(images, self.value_range), labels

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        images, labels = self._splits[split]
        return DataLoader(
            TensorDataset(images, labels),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self._collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


# --- embedded ---------------------------------------------------------------------------------


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 1,797 8×8 handwritten digits (0..16 intensities); needs no download."""

    name = "digits"
    num_classes = 10

    def __init__(self, image_size: int | None = 16, **kwargs) -> None:
        super().__init__(image_size=image_size, **kwargs)

    def _read(self) -> dict[str, tuple[Tensor, Tensor]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
        return {"all": (images, torch.from_numpy(digits.target).long())}


# --- torchvision datasets on disk: MNIST, Fashion-MNIST, CIFAR-10 -----------------------------


def _read_bytes(path: Path) -> bytes:
    """Read a file whole, gunzipping in memory: the shared data folder is read-only."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read()


def _parse_idx(data: bytes) -> Tensor:
    """The IDX format: 2 zero bytes, a type byte, a rank byte, big-endian int32 dims, then the data."""
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise MimicryError("not an unsigned-byte IDX file (bad magic number)")
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    return torch.from_numpy(array.copy()).view(*dims)


class TorchvisionDataModule(ImageDataModule):
    """A dataset with official train/test files under `root`, laid out as torchvision saves them.

    `source_split=train`: train and validate on a seeded split (`val_fraction`) of the training
    files; the official test files are the test split.
    `source_split=test`: cut the test files three ways (`val_fraction`, `test_fraction`), for
    machines that hold only the test split (e.g. ../shared/data) and have no network.
    """

    folder = ""  # under root, e.g. "MNIST/raw"
    files: dict[str, list[str]] = {}  # split → file names (without .gz)
    torchvision_class = ""

    def __init__(self, source_split: str = "train", download: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if source_split not in ("train", "test"):
            raise MimicryError(f"data.source_split={source_split!r} must be 'train' or 'test'")
        self.source_split = source_split
        self.download = download

    def _find_one(self, name: str) -> Path | None:
        folder = self.root / self.folder
        return next((p for p in (folder / name, folder / f"{name}.gz") if p.exists()), None)

    def _find(self, split: str) -> list[Path] | None:
        """The split's files (the .gz or the decompressed one), or None if any is missing."""
        found = [self._find_one(name) for name in self.files[split]]
        return None if None in found else found

    def _try_download(self) -> None:
        import torchvision.datasets as tvd

        dataset_class = getattr(tvd, self.torchvision_class)
        try:
            for train in (True, False):
                dataset_class(str(self.root), train=train, download=True)
        except Exception:  # offline or read-only root: the missing-file error below says what to do
            pass

    def _require(self, split: str) -> list[Path]:
        paths = self._find(split)
        if paths is None and self.download:
            self._try_download()
            paths = self._find(split)
        if paths is None:
            missing = [n for n in self.files[split] if self._find_one(n) is None]
            hint = (
                " Offline with only the test split (e.g. ../shared/data)? Use data.source_split=test "
                "to train and validate on a split of the test images."
                if split == "train" and self._find("test") is not None
                else ""
            )
            raise MimicryError(
                f"{self.name}: missing {', '.join(missing)} in {self.root / self.folder}"
                f"{' (download failed: no network?)' if self.download else ' (download=false)'}. "
                f"Set data.root=DIR or MIMICRY_DATA=DIR to a folder holding {self.folder}/.{hint}"
            )
        return paths

    def identity(self) -> str:
        size = self.spec()["image_size"]
        if self.source_split == "train":  # the official test split; val carved from the training files
            return f"{self.name}_{size}px_split{self.split_seed}-{self.val_fraction:g}"
        return f"{self.name}_{size}px_test-split{self.split_seed}-{self.val_fraction:g}-{self.test_fraction:g}"

    def prepare_data(self) -> None:
        # Lightning calls this on one process only: the place to download.
        for split in ("test",) if self.source_split == "test" else ("train", "test"):
            self._require(split)

    def _read_files(self, paths: list[Path]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _read(self) -> dict[str, tuple[Tensor, Tensor]]:
        if self.source_split == "test":
            return {"all": self._read_files(self._require("test"))}
        return {"train": self._read_files(self._require("train")), "test": self._read_files(self._require("test"))}


class MNISTDataModule(TorchvisionDataModule):
    name = "mnist"
    num_classes = 10
    folder = "MNIST/raw"
    torchvision_class = "MNIST"
    files = {
        "train": ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        "test": ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    }

    def _read_files(self, paths: list[Path]) -> tuple[Tensor, Tensor]:
        images, labels = (_parse_idx(_read_bytes(p)) for p in paths)
        return images.unsqueeze(1), labels.long()


class FashionMNISTDataModule(MNISTDataModule):
    name = "fashion_mnist"
    folder = "FashionMNIST/raw"
    torchvision_class = "FashionMNIST"


class CIFAR10DataModule(TorchvisionDataModule):
    name = "cifar10"
    num_classes = 10
    folder = "cifar-10-batches-py"
    torchvision_class = "CIFAR10"
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

    def _read_files(self, paths: list[Path]) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        for path in paths:
            batch = load_arrays_pickle(path)  # CIFAR-10 ships pickles: read them without running code
            images.append(torch.from_numpy(np.asarray(batch["data"], dtype=np.uint8)).view(-1, 3, 32, 32))
            labels.append(torch.tensor(batch["labels"], dtype=torch.long))
        return torch.cat(images), torch.cat(labels)


# --- a folder of images ------------------------------------------------------------------------


class ImageFolderDataModule(ImageDataModule):
    """Images under `path`; class subfolders optional (without them every label is 0, one class).

    Grayscale if every file is grayscale, else RGB. All images must share one size unless
    `image_size` is given (then each is resized to image_size × image_size).
    """

    name = "image_folder"

    def __init__(self, path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.class_names: list[str] = []

    def _files(self) -> list[tuple[Path, int]]:
        if not self.path:
            raise MimicryError("data=image_folder needs data.path=DIR (a folder of images, class subfolders optional)")
        folder = Path(self.path).expanduser()
        if not folder.is_dir():
            raise MimicryError(f"data.path={self.path!r} is not a folder")
        is_image = lambda p: p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES  # noqa: E731
        subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and any(is_image(p) for p in d.rglob("*")))
        if subfolders:
            self.class_names = [d.name for d in subfolders]
            files = [(p, label) for label, d in enumerate(subfolders) for p in sorted(d.rglob("*")) if is_image(p)]
        else:
            self.class_names = ["all"]
            files = [(p, 0) for p in sorted(folder.iterdir()) if is_image(p)]
        if not files:
            raise MimicryError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {folder}")
        return files

    def identity(self) -> str:
        folder = hashlib.sha1(str(Path(self.path).expanduser().resolve()).encode()).hexdigest()[:8]
        return f"{super().identity()}_{Path(self.path).name}-{folder}"

    def _read(self) -> dict[str, tuple[Tensor, Tensor]]:
        from PIL import Image

        files = self._files()
        modes, sizes = set(), set()
        for path, _ in files:  # headers only: no pixels decoded, no file left open
            with Image.open(path) as im:
                modes.add(im.mode)
                sizes.add(im.size)
        mode = "L" if modes <= {"1", "L", "LA", "I", "I;16"} else "RGB"
        if len(sizes) > 1 and self.image_size is None:
            examples = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
            raise MimicryError(
                f"images in {self.path} have different sizes ({examples}, ...): set data.image_size=S to resize all to S×S"
            )
        (width, height), *_ = sizes
        if width != height and self.image_size is None:
            raise MimicryError(f"images in {self.path} are {width}x{height}, not square: set data.image_size=S to resize to S×S")
        arrays = []
        for path, _ in files:
            with Image.open(path) as im:
                im = im.convert(mode)
                if self.image_size is not None:
                    im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
                arrays.append(np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], -1))
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.num_classes = len(self.class_names)
        return {"all": (images, labels)}
