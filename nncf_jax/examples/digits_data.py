"""The digits data set (scikit-learn's, bundled) and the CNN the digits job trains."""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import numpy as np

from nncf_jax.errors import UsageError

__all__ = [
    "CNN",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "TRAIN_SIZE",
    "DigitsData",
    "calibration_batches",
    "load_digits_data",
]

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 10
# Training images of the fixed split: steps per epoch are known without
# loading the data (and importing scikit-learn), e.g. to read a run back.
TRAIN_SIZE = 1437
_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsData:
    """The digits split.

    Attributes:
      x_train: float32 ``(1437, 8, 8, 1)`` in [0, 1].
      y_train: int32 ``(1437,)`` labels 0-9.
      x_test: float32 ``(360, 8, 8, 1)``.
      y_test: int32 ``(360,)``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def calibration_batches(
    x_train: np.ndarray, batch_size: int, samples: int = 256
) -> list[np.ndarray]:
    """The first ``samples`` training images in batches: ``init_data`` for
    range initialisation (quantization) and HAWQ; a list, so it can be read
    more than once."""
    n = min(samples, len(x_train))
    return [x_train[i : min(i + batch_size, n)] for i in range(0, n, batch_size)]


def load_digits_data() -> DigitsData:
    """Loads scikit-learn's digits, scaled to [0, 1] and split stratified 80/20 (fixed seed).

    Returns:
      A `DigitsData`, identical on every call.

    Raises:
      UsageError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UsageError(
            "the digits example needs scikit-learn for its data: "
            "pip install 'nncf-jax[examples]' (or pip install scikit-learn)"
        ) from None
    digits = load_digits()
    # Pixel values are integers 0..16.
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=_TEST_FRACTION, stratify=y, random_state=_SPLIT_SEED
    )
    if len(x_train) != TRAIN_SIZE:  # the split every run and checkpoint relies on
        raise UsageError(
            f"scikit-learn's digits split has {len(x_train)} training images, expected "
            f"{TRAIN_SIZE}; this scikit-learn's data set differs from the one nncf-jax knows"
        )
    return DigitsData(x_train, y_train, x_test, y_test)


class CNN(nn.Module):
    """conv3×3(32)-relu, conv3×3(64)-relu, avgpool 2×2, dense(128)-relu, dense(10).

    ``(N, 8, 8, 1)`` float32 images -> ``(N, 10)`` logits; 151,306 params.
    A plain ``flax.linen`` module: nncf-jax compresses it without edits.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(NUM_CLASSES)(x)
