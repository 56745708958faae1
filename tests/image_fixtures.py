"""Fixtures for the image tests (kept apart from conftest.py, which the runner's tests own)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mimicry.data.images import DigitsDataModule
from mimicry.models.cnn_classifier import CNNClassifier

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared_mnist = pytest.mark.skipif(
    not (SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"offline MNIST test split not found under {SHARED_DATA}",
)


# Named fixtures: test modules import the functions without their names shadowing the arguments.
@pytest.fixture(scope="module", name="digits")
def digits_fixture() -> DigitsDataModule:
    data = DigitsDataModule(batch_size=64, value_range="signed")
    data.setup()
    return data


@pytest.fixture(scope="module", name="feature_net")
def feature_net_fixture(digits: DigitsDataModule) -> CNNClassifier:
    """A CNN fitted for a few epochs on digits with a plain loop: enough to make features meaningful."""
    torch.manual_seed(0)
    spec = digits.spec()
    net = CNNClassifier(spec["channels"], spec["num_classes"], spec["image_size"], width=16)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for images, labels in digits.train_dataloader():
            loss = F.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()
