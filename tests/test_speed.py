"""The engine's speed options give the results of the plain path (within stated tolerances)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ganforge.engine.speed import Precision, SpeedWarning
from ganforge.errors import ConfigError
from ganforge.nn.upconv import NearestUpsampleConv2d, fuse_upsample_convs, upsample_conv3x3

from .test_engine import make_trainer

DCGAN = ["data.resolution=8", "data.limit=64", "train.batch_size=16", "train.ema_decay=0", "train.device=cpu"]


def dcgan_trainer(*extra):
    return make_trainer([*DCGAN, *extra], model="dcgan", data="digits")


def train(tr, steps=3):
    return [tr.train_step() for _ in range(steps)]


def rel_diff(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def assert_close_weights(a, b, rtol):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        if p.is_floating_point():
            assert rel_diff(p, q) <= rtol, name


def test_channels_last_matches_plain():
    """On by default for conv nets on images. Same weights after 3 tiny DCGAN steps as NCHW, to
    1e-5 relative (NHWC kernels sum in another order)."""
    fast, plain = dcgan_trainer(), dcgan_trainer("train.channels_last=false")
    conv = next(m for m in fast.D.modules() if isinstance(m, torch.nn.Conv2d))
    assert fast.channels_last and not plain.channels_last
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.next_batch()["x"].is_contiguous(memory_format=torch.channels_last)
    fast = dcgan_trainer()  # back to the same data position as `plain`
    train(plain), train(fast)
    assert_close_weights(fast.G, plain.G, 1e-5)
    assert_close_weights(fast.D, plain.D, 1e-5)


def test_channels_last_only_for_conv_nets_on_images():
    points = make_trainer()  # mlp on ring8
    images = make_trainer(["data.resolution=8", "data.limit=64"], model="mlp", data="digits")
    assert not points.channels_last and not images.channels_last
    assert images.next_batch()["x"].is_contiguous()
    train(images, 1)


def test_bf16_losses_match_fp32():
    """bf16 autocast: first-step losses within 5% (bf16 keeps 8 bits of mantissa), and training runs."""
    plain, fast = dcgan_trainer(), dcgan_trainer("train.amp=bf16")
    s_plain, s_fast = train(plain), train(fast)
    for key in ("Loss/D", "Loss/G"):
        assert s_fast[0][key].dtype == torch.float32
        assert s_fast[0][key].item() == pytest.approx(s_plain[0][key].item(), rel=0.05), key
    assert all(torch.isfinite(p).all() for p in fast.G.parameters())
    assert fast.G.project[0].weight.dtype == torch.float32  # parameters stay float32


def test_fp16_refused_on_cpu():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        dcgan_trainer("train.amp=fp16")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigError, match="train.amp must be off, bf16 or fp16"):
        dcgan_trainer("train.amp=fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_trains():
    tr = make_trainer(
        ["data.resolution=8", "data.limit=64", "train.batch_size=16", "train.device=cuda", "train.amp=fp16"],
        model="dcgan",
        data="digits",
    )
    stats = train(tr, 4)
    assert torch.isfinite(stats[-1]["Loss/G"]).item()
    assert tr.precision.scaler is not None and tr.precision.scaler.get_scale() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_lazy_r1_runs_in_float32_and_keeps_the_loss_scale():
    """Under fp16 the lazy R1 phase runs in float32 without the loss scale. Scaled, its double
    backward overflowed on nearly every R1 step (an H200: 11 of 12 skipped updates, scale 65536
    -> 16 in 170 steps); now only the first steps' usual overflows halve the scale."""
    tr = make_trainer(
        ["data.resolution=16", "data.limit=256", "train.batch_size=32", "train.device=cuda", "train.amp=fp16"],
        model="dcgan",
        data="digits",
    )
    assert tr.cfg.stab.r1_gamma > 0 and tr.cfg.stab.reg_every <= 16
    stats = train(tr, 3 * tr.cfg.stab.reg_every)
    assert all(torch.isfinite(s["Loss/D_r1"]).item() for s in stats if "Loss/D_r1" in s)
    assert tr.precision.scaler.get_scale() >= 2.0**13


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(SpeedWarning, match=r"torch.compile failed \(no compiler here\); training eagerly"):
        fast = dcgan_trainer("train.compile=true")
    assert fast.G._compiled_call_impl is None and fast.D._compiled_call_impl is None
    plain = dcgan_trainer()
    train(plain), train(fast)
    assert_close_weights(fast.G, plain.G, 0.0)


def test_compiled_G_ema_runs_its_own_weights(monkeypatch):
    """G_ema is a deep copy of a compiled G: it must run its own (EMA) weights, eagerly."""

    def compile_stub(fn, *args, **kwargs):  # like torch.compile: a new function closing over `fn`
        return lambda *a, **k: fn(*a, **k)

    monkeypatch.setattr(torch, "compile", compile_stub)
    tr = make_trainer(
        ["data.resolution=8", "data.limit=64", "train.compile=true"], model="dcgan", data="digits"
    )
    assert tr.G._compiled_call_impl is not None and tr.G_ema._compiled_call_impl is None
    with torch.no_grad():
        for p in tr.G.parameters():
            p.add_(1.0)
    z = torch.randn(4, tr.cfg.net.z_dim, device=tr.device)
    assert not torch.allclose(tr.G_ema.eval()(z), tr.G.eval()(z))


@pytest.mark.slow
def test_compile_matches_eager():
    """torch.compile (inductor; tens of seconds on a CPU): weights after 3 steps within 1e-4 relative.
    R1 off: the small-image recipe's R1 would keep D eager (see the next test)."""
    plain, fast = dcgan_trainer("stab.r1_gamma=0"), dcgan_trainer("stab.r1_gamma=0", "train.compile=true")
    assert fast.G._compiled_call_impl is not None and fast.D._compiled_call_impl is not None
    train(plain), train(fast)
    assert_close_weights(fast.G, plain.G, 1e-4)
    assert "_orig_mod" not in "".join(fast.G.state_dict())  # checkpoints keep their names


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["stab.r1_gamma=1"], "R1"),
        (["stab.r1_gamma=0", "loss.name=wgan-gp", "net.d_norm=layer"], "the gradient penalty"),
        (["stab.r1_gamma=0", "stab.unrolled_steps=1"], "the unrolled look-ahead"),
    ],
)
def test_compile_leaves_D_eager_when_a_penalty_needs_a_double_backward(extra, named):
    """torch.compile has no double backward: with R1, WGAN-GP or unrolling, G alone is compiled,
    with one warning naming the reason (compiling is lazy, so this test trains nothing)."""
    with pytest.warns(SpeedWarning, match=f"D stays eager \\({named} needs a double backward"):
        tr = dcgan_trainer(*extra, "train.compile=true")
    assert tr.G._compiled_call_impl is not None and tr.D._compiled_call_impl is None


def record_fakes(tr, steps):
    """G's outputs, and the fakes each D phase judged, over `steps` steps."""
    g_out, d_fakes = [], []
    handle = tr.G.register_forward_hook(lambda m, i, o: g_out.append(o.detach().clone()))
    d_outputs = tr.family.d_outputs

    def recording(D, real_in, fake_in):
        d_fakes.append(fake_in.detach().clone())
        return d_outputs(D, real_in, fake_in)

    tr.family.d_outputs = recording
    train(tr, steps)
    handle.remove()
    return g_out, d_fakes


def test_reuse_fakes_saves_one_generator_forward():
    """train.reuse_fakes (n_dis=1): after the first step G runs once per step, and the fakes D
    judges are exactly the previous G phase's (PyTorch-GAN's order); off (default), G runs twice."""
    reuse, plain = dcgan_trainer("train.reuse_fakes=true"), dcgan_trainer()
    g_reuse, d_reuse = record_fakes(reuse, 3)
    g_plain, _ = record_fakes(plain, 3)
    assert len(g_reuse) == 4 and len(g_plain) == 6  # step 1 draws fresh fakes for D
    # g_reuse: [step-1 D phase, step-1 G phase, step-2 G phase, step-3 G phase]
    assert torch.equal(d_reuse[1], g_reuse[1]) and torch.equal(d_reuse[2], g_reuse[2])


def test_fused_d_pass_matches_two_passes():
    """D without cross-example layers scores real and fake batches in one pass: same logits as two
    passes (to float rounding); with batch norm it keeps two passes (statistics per batch)."""
    tr = make_trainer()  # mlp on ring8: no batch norm
    fam, batch = tr.family, tr.next_batch()
    real_in, fake_in = fam.d_inputs(tr.G, batch, tr.noise)
    fused = fam.d_outputs(tr.D, real_in, fake_in)
    two = tr.D(real_in).flatten(), tr.D(fake_in).flatten()
    for a, b in zip(fused, two):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    calls = []
    handle = tr.D.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    fam.d_outputs(tr.D, real_in, fake_in)
    bn = dcgan_trainer("data.resolution=16")  # 16 px: D has a batch-norm layer
    bn_handle = bn.D.register_forward_pre_hook(lambda m, i: calls.append(i[0].shape[0]))
    bn.family.d_outputs(bn.D, *bn.family.d_inputs(bn.G, bn.next_batch(), bn.noise))
    handle.remove(), bn_handle.remove()
    assert calls == [2 * real_in.shape[0], 16, 16]


def test_reuse_fakes_only_with_one_d_step():
    assert dcgan_trainer("train.reuse_fakes=true").family.reuse_fakes
    assert not dcgan_trainer().family.reuse_fakes
    assert not dcgan_trainer("train.reuse_fakes=true", "train.n_dis=2").family.reuse_fakes
    assert make_trainer(["train.reuse_fakes=true", "stab.unrolled_steps=2"]).family.reuse_fakes


def test_reuse_fakes_resume_is_bit_exact(tmp_path):
    """The cached fakes are part of the checkpointed state: a resumed run continues bit-exactly."""
    full = dcgan_trainer("train.reuse_fakes=true")
    train(full, 4)
    half = dcgan_trainer("train.reuse_fakes=true")
    train(half, 2)
    tensors, meta = half.state()
    assert "fakes/x" in tensors
    resumed = dcgan_trainer("train.reuse_fakes=true")
    resumed.load_state(tensors, meta)
    train(resumed, 2)
    for p, q in zip(full.G.state_dict().values(), resumed.G.state_dict().values()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_upsample_conv3x3_equals_upsample_then_conv(channels_last, bias):
    """One 4x4 stride-2 transposed conv gives conv3x3(nearest_x2(x)), borders included, to 1e-6."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, generator=gen)  # non-square, odd sizes
    w = torch.randn(7, 4, 3, 3, generator=gen)
    b = torch.randn(7, generator=gen) if bias else None
    if channels_last:
        x, w = (
            x.contiguous(memory_format=torch.channels_last),
            w.contiguous(memory_format=torch.channels_last),
        )
    plain = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    fast = upsample_conv3x3(x, w, b)
    assert fast.shape == (3, 7, 10, 12)
    assert rel_diff(fast, plain) < 1e-6
    assert fast.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_fuse_upsample_convs_rewrites_only_exact_pairs():
    """Only nearest-x2 + plain 3x3/stride-1/padding-1 pairs are rewritten; outputs, input and
    weight gradients and state-dict names stay those of the plain module."""
    torch.manual_seed(0)
    seq = torch.nn.Sequential(
        torch.nn.Upsample(scale_factor=2, mode="nearest"),
        torch.nn.Conv2d(3, 4, 3, 1, 1),
        torch.nn.Upsample(scale_factor=2, mode="bilinear"),  # not nearest: kept
        torch.nn.Conv2d(4, 4, 3, 1, 1),
        torch.nn.Upsample(scale_factor=2),
        torch.nn.Conv2d(4, 2, 3, 2, 1),  # stride 2: kept
    )
    fused = copy.deepcopy(seq)
    assert fuse_upsample_convs(fused) == 1
    assert isinstance(fused[0], torch.nn.Identity) and isinstance(fused[1], NearestUpsampleConv2d)
    assert type(fused[3]) is torch.nn.Conv2d and type(fused[5]) is torch.nn.Conv2d
    assert list(fused.state_dict()) == list(seq.state_dict())
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = seq(x), fused(x2)
    assert rel_diff(y2, y) < 1e-5
    y.square().sum().backward()
    y2.square().sum().backward()
    assert rel_diff(x2.grad, x.grad) < 1e-5
    assert rel_diff(fused[1].weight.grad, seq[1].weight.grad) < 1e-5


def test_fuse_upsample_leaves_spectral_norm_convs_alone():
    seq = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(3, 4, 3, 1, 1))
    torch.nn.utils.parametrizations.spectral_norm(seq[1])
    assert fuse_upsample_convs(seq) == 0


def test_fuse_upsample_training_matches_plain():
    """A resize-conv DCGAN trains to the same weights with and without the rewrite (1e-5)."""
    fast = dcgan_trainer("net.g_up=resize")
    plain = dcgan_trainer("net.g_up=resize", "train.fuse_upsample=false")
    assert any(isinstance(m, NearestUpsampleConv2d) for m in fast.G.modules())
    assert not any(isinstance(m, NearestUpsampleConv2d) for m in plain.G.modules())
    train(plain), train(fast)
    assert_close_weights(fast.G, plain.G, 1e-5)
    assert_close_weights(fast.D, plain.D, 1e-5)
