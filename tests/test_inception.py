"""FIDInception against an independent rebuild of pytorch-fid's FIDInceptionV3, preprocessing, weights I/O.

The reference below follows torchvision's ``Inception3`` and pytorch-fid's ``fid_inception_v3()``
(build Inception3(num_classes=1008, aux_logits=False), then swap in the FID blocks) and its
``InceptionV3`` wrapper (bilinear resize to 299, 2x - 1, blocks up to the final average pool).
It is written separately from ganforge's implementation so a wrong name, shape, pool or branch
order on either side shows up as a mismatch.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganforge.errors import GanforgeError
from ganforge.metrics.inception import (
    ENV_VAR,
    FIDInception,
    convert_to_safetensors,
    inception_features,
    load_fid_inception,
    preprocess,
)

# --------------------------------------------------------------------------- reference (torchvision layout)


class RefBasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


# torchvision's A, C and E blocks; only their FID subclasses (below) are run, so no forward here.
class RefInceptionA(nn.Module):
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = RefBasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = RefBasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = RefBasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = RefBasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = RefBasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = RefBasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = RefBasicConv2d(in_channels, pool_features, kernel_size=1)


class RefInceptionB(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = RefBasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = RefBasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = RefBasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = RefBasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class RefInceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = RefBasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = RefBasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = RefBasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = RefBasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = RefBasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = RefBasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = RefBasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = RefBasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = RefBasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = RefBasicConv2d(in_channels, 192, kernel_size=1)


class RefInceptionD(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = RefBasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = RefBasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = RefBasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = RefBasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = RefBasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = RefBasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = self.branch3x3_2(branch3x3)
        branch7x7x3 = self.branch7x7x3_1(x)
        branch7x7x3 = self.branch7x7x3_2(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_3(branch7x7x3)
        branch7x7x3 = self.branch7x7x3_4(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class RefInceptionE(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch1x1 = RefBasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = RefBasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = RefBasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = RefBasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = RefBasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = RefBasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = RefBasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = RefBasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = RefBasicConv2d(in_channels, 192, kernel_size=1)


# pytorch-fid's patched blocks: TF average pools exclude padding; Mixed_7c max-pools its pool branch.


class RefFIDInceptionA(RefInceptionA):
    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_1(x)
        branch5x5 = self.branch5x5_2(branch5x5)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = self.branch3x3dbl_3(branch3x3dbl)
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class RefFIDInceptionC(RefInceptionC):
    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_1(x)
        branch7x7 = self.branch7x7_2(branch7x7)
        branch7x7 = self.branch7x7_3(branch7x7)
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_2(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_3(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_4(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class _RefFIDInceptionE(RefInceptionE):
    def pool(self, x):
        raise NotImplementedError

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_1(x)
        branch3x3dbl = self.branch3x3dbl_2(branch3x3dbl)
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class RefFIDInceptionE_1(_RefFIDInceptionE):
    def pool(self, x):
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class RefFIDInceptionE_2(_RefFIDInceptionE):
    def pool(self, x):
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class RefInception3(nn.Module):
    """torchvision Inception3(num_classes=1008, aux_logits=False, init_weights=False), eval forward."""

    def __init__(self, num_classes=1008):
        super().__init__()
        self.Conv2d_1a_3x3 = RefBasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = RefBasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = RefBasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = RefBasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = RefBasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = RefInceptionA(192, pool_features=32)
        self.Mixed_5c = RefInceptionA(256, pool_features=64)
        self.Mixed_5d = RefInceptionA(288, pool_features=64)
        self.Mixed_6a = RefInceptionB(288)
        self.Mixed_6b = RefInceptionC(768, channels_7x7=128)
        self.Mixed_6c = RefInceptionC(768, channels_7x7=160)
        self.Mixed_6d = RefInceptionC(768, channels_7x7=160)
        self.Mixed_6e = RefInceptionC(768, channels_7x7=192)
        self.AuxLogits = None  # aux_logits=False
        self.Mixed_7a = RefInceptionD(768)
        self.Mixed_7b = RefInceptionE(1280)
        self.Mixed_7c = RefInceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=0.5)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1"]:
            x = getattr(self, name)(x)
        for name in ["Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a"]:
            x = getattr(self, name)(x)
        for name in ["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]:
            x = getattr(self, name)(x)
        x = self.dropout(self.avgpool(x))
        return self.fc(torch.flatten(x, 1))


def ref_fid_inception_v3():
    """pytorch-fid's fid_inception_v3(): torchvision's Inception3 with the FID blocks swapped in."""
    inception = RefInception3(num_classes=1008)
    inception.Mixed_5b = RefFIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = RefFIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = RefFIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = RefFIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = RefFIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = RefFIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = RefFIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = RefFIDInceptionE_1(1280)
    inception.Mixed_7c = RefFIDInceptionE_2(2048)
    return inception


class RefInceptionV3Wrapper(nn.Module):
    """pytorch-fid InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)."""

    def __init__(self, inception):
        super().__init__()
        i = inception
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2)),
                nn.Sequential(i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2)),
                nn.Sequential(
                    i.Mixed_5b,
                    i.Mixed_5c,
                    i.Mixed_5d,
                    i.Mixed_6a,
                    i.Mixed_6b,
                    i.Mixed_6c,
                    i.Mixed_6d,
                    i.Mixed_6e,
                ),
                nn.Sequential(i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d((1, 1))),
            ]
        )

    def forward(self, inp):
        x = F.interpolate(inp, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for block in self.blocks:
            x = block(x)
        return [x]  # (N, 2048, 1, 1)


def randomise_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights *and* BatchNorm running stats, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("conv.weight") or name == "fc.weight":
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("bn.weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            else:  # bn.bias, running_mean, fc.bias
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module.eval()


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    # Inception is ~6 GFLOP per image. On a 2-core box shared with other jobs, OpenMP threads that
    # wait for a busy core made a forward pass 10-20x slower (7 s vs 0.4 s per image), so this
    # module runs single-threaded and restores the setting afterwards.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref_and_ours():
    ref = randomise_(ref_fid_inception_v3(), seed=0)
    ours = FIDInception()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours.eval()


# --------------------------------------------------------------------------- architecture equivalence


def test_state_dict_keys_and_shapes_match_pytorch_fid_layout(ref_and_ours):
    ref, ours = ref_and_ours
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)  # same names in the same order
    assert {k: tuple(v.shape) for k, v in our_sd.items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    # torchvision's inception_v3 has 27_161_264 parameters; minus AuxLogits, plus 8 classes:
    assert sum(p.numel() for p in ours.parameters()) == 23_850_960
    assert our_sd["fc.weight"].shape == (1008, 2048)


def test_features_and_logits_match_reference(ref_and_ours):
    ref, ours = ref_and_ours
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 48, generator=g)  # [0, 1], not 299: exercises the legacy resize too
    t0 = time.perf_counter()
    out = inception_features(ours, images, batch_size=2, resize="legacy")
    per_image = (time.perf_counter() - t0) / 2
    captured = {}
    hook = ref.avgpool.register_forward_hook(lambda m, i, o: captured.update(pool=o.flatten(1)))
    try:
        with torch.inference_mode():  # one pass of the reference gives both pool3 and the logits
            ref_logits = ref(
                2 * F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) - 1
            )
    finally:
        hook.remove()
    ref_pool = captured["pool"]  # (2, 2048)
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert ref_pool.abs().mean() > 1e-2 and ref_pool.std() > 1e-2  # random net is not degenerate
    torch.testing.assert_close(out["pool"].float(), ref_pool, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["logits"].float(), ref_logits, rtol=1e-5, atol=1e-5)
    unbiased = ref_pool.double() @ ref.fc.weight.double().T
    torch.testing.assert_close(out["logits_unbiased"], unbiased, rtol=1e-5, atol=1e-5)
    assert out["meta"]["resize"] == "legacy" and out["meta"]["n"] == 2
    print(f"\nFIDInception CPU ({torch.get_num_threads()} thread): {per_image:.3f} s/image (legacy)")


def test_features_match_reference_at_299_and_batching_is_invisible(ref_and_ours):
    ref, ours = ref_and_ours
    images = torch.rand(3, 3, 299, 299, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref_pool = RefInceptionV3Wrapper(ref)(images)[0].flatten(1)
    whole = inception_features(ours, images, batch_size=3)
    batched = inception_features(ours, iter([images[:2], images[2:]]), batch_size=1)
    torch.testing.assert_close(whole["pool"].float(), ref_pool, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched["pool"], whole["pool"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched["logits"], whole["logits"], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- preprocessing


def clean_fid_resize_reference(img_hwc_uint8: np.ndarray) -> np.ndarray:
    """clean-fid make_resizer("PIL", quantize_after=False, "bicubic", (299, 299)) on an (H, W, 3) image."""
    chans = []
    for c in range(3):
        pil = Image.fromarray(img_hwc_uint8[:, :, c].astype(np.float32))
        assert pil.mode == "F"
        pil = pil.resize((299, 299), resample=Image.BICUBIC)
        chans.append(np.asarray(pil).clip(0, 255).reshape(299, 299, 1))
    return np.concatenate(chans, axis=2).astype(np.float32)


def test_legacy_resize_is_bilinear_then_2x_minus_1():
    x = torch.rand(2, 3, 7, 5, generator=torch.Generator().manual_seed(3))
    expected = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert torch.equal(preprocess(x, "legacy"), expected)
    x299 = torch.rand(1, 3, 299, 299)
    torch.testing.assert_close(preprocess(x299, "legacy"), 2 * x299 - 1)  # no-op resize at 299
    u8 = (x * 255).round().to(torch.uint8)
    assert torch.equal(preprocess(u8, "legacy"), preprocess(u8.float() / 255, "legacy"))


def test_clean_resize_matches_pil_float_bicubic_reference():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, size=(2, 11, 6, 3), dtype=np.uint8)  # (N, H, W, C), non-square
    expected = np.stack([clean_fid_resize_reference(im) for im in img]).transpose(0, 3, 1, 2)
    u8 = torch.from_numpy(img).permute(0, 3, 1, 2).contiguous()
    got = preprocess(u8, "clean")
    assert got.shape == (2, 3, 299, 299) and got.dtype == torch.float32
    torch.testing.assert_close(got, (torch.from_numpy(expected) - 128) / 128, rtol=0, atol=1e-6)
    # floats k/255 quantise back to exactly the same 8-bit image
    assert torch.equal(preprocess(u8.float() / 255, "clean"), got)
    # a downscale (400x320 -> 299) goes through PIL's antialiasing support too
    big = rng.integers(0, 256, size=(1, 400, 320, 3), dtype=np.uint8)
    got_big = preprocess(torch.from_numpy(big).permute(0, 3, 1, 2).contiguous(), "clean")
    torch.testing.assert_close(
        got_big[0], (torch.from_numpy(clean_fid_resize_reference(big[0])).permute(2, 0, 1) - 128) / 128
    )


@pytest.mark.parametrize("resize", ["legacy", "clean"])
def test_greyscale_is_repeated_to_three_channels(resize):
    grey = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(5))
    out = preprocess(grey, resize)
    assert out.shape == (2, 3, 299, 299)
    assert torch.equal(out, preprocess(grey.repeat(1, 3, 1, 1), resize))
    assert torch.equal(out[:, 0], out[:, 2])


def test_bad_images_are_refused():
    with pytest.raises(GanforgeError, match=r"\[0, 1\]"):
        preprocess(torch.rand(1, 3, 8, 8) * 2 - 1)  # a [-1, 1] generator output
    with pytest.raises(GanforgeError, match=r"\(N, 3, H, W\)"):
        preprocess(torch.rand(3, 8, 8))
    with pytest.raises(GanforgeError, match="resize mode"):
        preprocess(torch.rand(1, 3, 8, 8), "nearest")  # type: ignore[arg-type]


class _CountingModel(nn.Module):
    """A stand-in with FIDInception's interface that records the largest batch it saw."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2048, 1008)
        self.weights_name = "fake.safetensors"
        self.max_batch = 0

    def forward(self, x):
        self.max_batch = max(self.max_batch, x.shape[0])
        pool = x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]  # (N, 2048) depends on the image
        return pool, self.fc(pool)


def test_batching_iterator_meta_and_memory_bound():
    images = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    model = _CountingModel()
    whole = inception_features(model, images, batch_size=3, resize="clean")
    assert model.max_batch == 3
    parts = inception_features(model, (b for b in images.split(4)), batch_size=2, resize="clean")
    assert model.max_batch == 3
    assert whole["pool"].dtype == torch.float64 and whole["pool"].shape == (7, 2048)
    assert torch.equal(whole["pool"], parts["pool"])
    torch.testing.assert_close(whole["logits"], parts["logits"])  # fc matmul blocking depends on batch size
    assert whole["meta"] == {
        "extractor": "inception-v3-fid",
        "resize": "clean",
        "weights": "fake.safetensors",
        "n": 7,
    }
    assert not whole["pool"].is_inference()  # ordinary tensors for the caller
    only_pool = inception_features(model, images, resize="legacy", with_logits=False)
    assert set(only_pool) == {"pool", "meta"} and only_pool["meta"]["resize"] == "legacy"
    with pytest.raises(GanforgeError, match="no images"):
        inception_features(model, iter([]))


# --------------------------------------------------------------------------- weights files


def test_missing_weights_name_the_file_and_how_to_pass_it(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(GanforgeError) as err:
        load_fid_inception()
    msg = str(err.value)
    assert "\n" not in msg
    for part in (ENV_VAR, "--inception-weights", "pt_inception-2015-12-05-6726825d.pth", "pytorch-fid"):
        assert part in msg
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(GanforgeError, match="nope.pth"):
        load_fid_inception()


class _Evil:
    """Unpickling this would create a directory: a stand-in for arbitrary code execution."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_pickled_code_in_pth_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": _Evil(str(marker))}, path)
    with pytest.raises(GanforgeError, match="evil.pth"):
        load_fid_inception(path)
    assert not marker.exists()


def test_wrong_state_dict_names_file_and_keys(tmp_path):
    sd = FIDInception().state_dict()
    sd.pop("Mixed_7c.branch_pool.conv.weight")
    sd["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    path = tmp_path / "wrong.pth"
    torch.save(sd, path)
    with pytest.raises(GanforgeError) as err:
        load_fid_inception(path)
    msg = str(err.value)
    assert "wrong.pth" in msg and "Mixed_7c.branch_pool.conv.weight" in msg and "AuxLogits.fc.weight" in msg
    sd = FIDInception().state_dict()
    sd["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(sd, path)
    with pytest.raises(GanforgeError, match=r"wrong shape.*fc\.weight"):
        load_fid_inception(path)


def test_safetensors_round_trip_and_env_var(ref_and_ours, tmp_path, monkeypatch):
    ref, _ = ref_and_ours
    pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    sd = {
        k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")
    }  # like old exports
    torch.save(sd, pth)
    out = convert_to_safetensors(pth, tmp_path / "sub" / "inception.safetensors")
    assert out.is_file()
    monkeypatch.setenv(ENV_VAR, str(out))
    model = load_fid_inception()
    assert model.weights_name == "inception.safetensors" and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    loaded = model.state_dict()
    for k, v in ref.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded[k], v), k
    from_pth = load_fid_inception(pth)
    assert all(torch.equal(a, b) for a, b in zip(from_pth.state_dict().values(), model.state_dict().values()))
    bad = tmp_path / "x.bin"
    bad.touch()
    with pytest.raises(GanforgeError, match=r"\.pth or \.safetensors"):
        load_fid_inception(bad)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(ENV_VAR), reason=f"set {ENV_VAR} to the real weights file")
def test_real_weights_load_strictly_and_give_sane_outputs():
    model = load_fid_inception()
    out = inception_features(model, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(7)))
    assert out["pool"].shape == (2, 2048) and (out["pool"] >= 0).all()  # post-ReLU average
    probs = out["logits"].softmax(1)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, dtype=torch.float64))
