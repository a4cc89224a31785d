"""The ``paper`` protocol's images as LEMUR's ``norm_256_flip`` makes them (issue 18): Resize(256),
CenterCrop(256), RandomHorizontalFlip, ToTensor, Normalize — the properties here, and the very
pixels against torchvision where it is installed."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch

from nasloop.config import EvaluatorConfig
from nasloop.v1 import common_pb2 as common
from services.evaluator import lemur, protocols
from services.evaluator.datasets import SandboxData, _atomic_write, _normalised_split
from services.evaluator.harness import transform
from services.evaluator.task import Task

SIZE = 256


def paper_transform() -> lemur.Transform:
    """The transform the evaluator builds for a request naming the ``paper`` protocol."""
    p = protocols.resolve(common.EvaluationProtocol(name="paper"), EvaluatorConfig())
    return transform(Task("t", "", replace(p, device="cpu")))


def images(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, h, w), dtype=np.uint8)


def sandbox(train_x: np.ndarray, tmp_path) -> SandboxData:  # type: ignore[no-untyped-def]
    """The images through the evaluator's own dataset file: what a sandbox's tensors are."""
    arrays, _, _ = _normalised_split("t", train_x, np.zeros(len(train_x)), train_x, np.zeros(1), 10)
    path = tmp_path / "t.npz"
    _atomic_write(path, lambda f: np.savez(f, **arrays))
    return SandboxData.load(path)


def test_the_paper_protocol_resizes_centre_crops_and_flips() -> None:
    t = paper_transform()
    assert (t.size, t.crop, t.flip) == (SIZE, False, True)


def test_output_is_256_square_from_any_shape() -> None:
    t = paper_transform()
    g = torch.Generator().manual_seed(0)
    for hw in ((32, 32), (32, 48), (300, 200), (256, 256)):
        x = torch.randn(2, 3, *hw)
        assert t.train(x, g).shape == (2, 3, SIZE, SIZE)
        assert t.test(x).shape == (2, 3, SIZE, SIZE)


def test_the_crop_is_the_centre_of_the_resized_image() -> None:
    """A 32x48 image whose value is its column: Resize(256) makes it 256x384 (columns spread
    8x), CenterCrop(256) keeps columns 64..319 of that, i.e. source columns 8..40."""
    cols = torch.arange(48, dtype=torch.float32).expand(1, 3, 32, 48).contiguous()
    out = lemur.Transform(SIZE).test(cols)
    big = torch.nn.functional.interpolate(cols, size=(256, 384), mode="bilinear")
    assert torch.equal(out, big[..., :, 64:320])
    centre = out[0, 0, 0]
    assert centre[0].item() == pytest.approx(8 - 0.5 + 0.5 / 8)  # column 64 of 384, in source
    assert centre[-1].item() == pytest.approx(40 - 0.5 - 0.5 / 8)
    rows = cols.transpose(-1, -2).contiguous()  # 48x32: the crop takes the middle rows instead
    assert torch.equal(lemur.Transform(SIZE).test(rows), out.transpose(-1, -2))


def test_the_flip_is_horizontal_only_and_random_per_image() -> None:
    x = torch.randn(64, 3, 32, 32)
    t = lemur.Transform(SIZE, flip=True)
    out = t.train(x, torch.Generator().manual_seed(1))
    plain = lemur.Transform(SIZE).test(x)
    flipped = [torch.equal(o, p.flip(-1)) for o, p in zip(out, plain, strict=True)]
    kept = [torch.equal(o, p) for o, p in zip(out, plain, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48  # about half, each image drawn on its own
    assert not any(torch.equal(o, p.flip(-2)) for o, p in zip(out, plain, strict=True))
    assert torch.equal(t.test(x), plain)  # test images are not flipped


def test_normalisation_is_per_channel_mean_and_std_of_the_training_split(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = images(40)
    data = sandbox(x, tmp_path)
    scaled = x.astype(np.float64) / 255
    mean, std = scaled.mean(axis=(0, 2, 3)), scaled.std(axis=(0, 2, 3))
    want = (scaled - mean[None, :, None, None]) / std[None, :, None, None]
    assert np.allclose(data.train_x.numpy(), want, atol=1e-5)
    # What the network trains on: normalised, then resized, cropped, flipped.
    out = paper_transform().train(data.train_x, torch.Generator().manual_seed(0))
    assert out.shape == (40, 3, SIZE, SIZE)
    per_channel = out.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=0.05)


HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


@pytest.mark.skipif(
    not HAS_TORCHVISION,
    reason="torchvision is not installed (the project never depends on it; CPU environments "
    "remove it): the pixel comparison runs in the GPU images",
)
@pytest.mark.parametrize("hw", [(32, 32), (32, 48)])
def test_the_pipeline_matches_torchvisions_norm_256_flip(hw: tuple[int, int], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """LEMUR's pipeline on PIL images (flip forced off and on) against the evaluator's on the
    same images: every output equals one of the two, to the 8-bit rounding PIL does after its
    resize."""
    from PIL import Image
    from torchvision import transforms as T

    x = images(6, *hw, seed=3)
    data = sandbox(x, tmp_path)
    mean = data_mean_std(x)
    ours = paper_transform().train(data.train_x, torch.Generator().manual_seed(0))

    def theirs(p: float) -> torch.Tensor:
        pipeline = T.Compose(
            [T.Resize(SIZE), T.CenterCrop(SIZE), T.RandomHorizontalFlip(p), T.ToTensor(),
             T.Normalize(*mean)]
        )  # fmt: skip
        return torch.stack([pipeline(Image.fromarray(i.transpose(1, 2, 0))) for i in x])

    plain, flipped = theirs(0.0), theirs(1.0)
    tol = 1.5 / 255 / min(mean[1])  # PIL's fixed-point resize is off by up to one 8-bit step
    for o, a, b in zip(ours, plain, flipped, strict=True):
        assert min((o - a).abs().max(), (o - b).abs().max()) <= tol


def data_mean_std(x: np.ndarray) -> tuple[list[float], list[float]]:
    scaled = x.astype(np.float64) / 255
    return list(scaled.mean(axis=(0, 2, 3))), list(scaled.std(axis=(0, 2, 3)))
