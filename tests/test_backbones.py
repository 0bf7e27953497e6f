"""Backbones: shapes, seeded initialisation, vmap-safe BatchNorm, timm models and local weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from mtbench.methods.backbones import BACKBONES, NORMS, BatchStatNorm2d, build_backbone, linear_head
from mtbench.methods.functional import stacked_copies
from mtbench.core.errors import UserError
from support import DEVICES

SHAPES = [(1, 28, 28), (3, 32, 32)]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("shape", SHAPES)
def test_every_backbone_maps_images_to_its_feature_size(name: str, shape, one_thread) -> None:
    net = build_backbone(name, shape, torch.Generator().manual_seed(0))
    out = net(torch.randn(4, *shape, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (4, net.out_features) and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("name", BACKBONES.names())
def test_initialisation_comes_from_the_generator_only(name: str) -> None:
    rng_before = torch.get_rng_state()
    a = build_backbone(name, (1, 28, 28), torch.Generator().manual_seed(5))
    torch.manual_seed(12345)  # the global RNG must not matter
    b = build_backbone(name, (1, 28, 28), torch.Generator().manual_seed(5))
    c = build_backbone(name, (1, 28, 28), torch.Generator().manual_seed(6))
    assert same_weights(a, b) and not same_weights(a, c)
    torch.set_rng_state(rng_before)


def test_finn_initialisation_is_xavier_convolutions_a_standard_normal_head_and_unit_norm_scales() -> None:
    """``init=finn`` (Finn et al.'s Omniglot code): Xavier-uniform convolutions, N(0, 1) head, norm scales at 1."""
    net = build_backbone("conv4", (1, 28, 28), torch.Generator().manual_seed(0), init="finn", norm="batch")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, NORMS)]
    assert convs and norms
    for conv in convs:  # Xavier-uniform: within ±sqrt(6 / (fan_in + fan_out)), and filling most of it
        fan_in, fan_out = conv.weight[0].numel(), conv.weight.shape[0] * conv.weight[0, 0].numel()
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert 0.9 * bound < conv.weight.abs().max() <= bound and not conv.bias.any()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
    head = linear_head(64, 20, torch.Generator().manual_seed(0), "finn")
    assert 0.9 < head.weight.std() < 1.1 and head.weight.abs().max() > 2.5 and not head.bias.any()


@pytest.mark.parametrize("name", BACKBONES.names())
def test_batch_norm_option_has_no_running_statistics(name: str) -> None:
    net = build_backbone(name, (1, 28, 28), torch.Generator().manual_seed(0), norm="batch")
    assert any(isinstance(m, BatchStatNorm2d) for m in net.modules())
    assert not list(net.buffers())


@pytest.mark.parametrize(("shape", "features"), [((1, 28, 28), 64 * 2 * 2), ((3, 84, 84), 64 * 6 * 6)])
def test_strided_conv4_downsamples_by_its_convolutions(shape, features: int) -> None:
    """conv4-strided: the same four 64-filter 3x3 convolutions as conv4 with stride 2 and no pooling, so on 28x28
    Omniglot its feature is 256-d (Reptile's Omniglot network) where conv4's is 64-d."""
    strided = build_backbone("conv4-strided", shape, torch.Generator().manual_seed(0))
    pooled = build_backbone("conv4", shape, torch.Generator().manual_seed(0))
    assert strided.out_features == features and strided(torch.zeros(2, *shape)).shape == (2, features)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in strided.modules())
    convs = [m for m in strided.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4
    assert sum(p.numel() for p in strided.parameters()) == sum(p.numel() for p in pooled.parameters())
    assert build_backbone("conv4", (1, 28, 28), torch.Generator().manual_seed(0)).out_features == 64


def test_strided_conv4_averaged_is_the_same_network_pooled_to_its_channels() -> None:
    """conv4-strided-avg (MAML's Omniglot network): conv4-strided's weights, its last map averaged over positions,
    so its 64-d feature is the mean of the 256-d flattened one's four positions per channel."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    flat = build_backbone("conv4-strided", (1, 28, 28), torch.Generator().manual_seed(0))
    avg = build_backbone("conv4-strided-avg", (1, 28, 28), torch.Generator().manual_seed(0))
    assert avg.out_features == 64 and flat.out_features == 256
    assert all(torch.equal(a, b) for a, b in zip(avg.state_dict().values(), flat.state_dict().values()))
    flat.eval(), avg.eval()
    torch.testing.assert_close(avg(x), flat(x).view(3, 64, 4).mean(dim=2))


def test_batch_stat_norm_matches_functional_batch_norm() -> None:
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    norm = BatchStatNorm2d(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    expected = torch.nn.functional.batch_norm(x, None, None, norm.weight, norm.bias, training=True)
    torch.testing.assert_close(norm(x), expected)


def test_batch_stat_norm_under_vmap_gives_the_same_bits_with_and_without_gradients() -> None:
    """Under vmap the no-gradient path (in place) computes what the differentiable one does, bit for bit (float32),
    each slice with its own statistics, and leaves the input alone."""
    x = torch.randn(4, 6, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    norm = BatchStatNorm2d(3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    before = x.clone()
    with torch.enable_grad():
        kept = torch.func.vmap(norm)(x)
    with torch.no_grad():
        fast = torch.func.vmap(norm)(x)
    assert kept.requires_grad and not fast.requires_grad
    assert torch.equal(fast, kept.detach()) and torch.equal(x, before)
    torch.testing.assert_close(fast[1], norm(x[1]))


def test_conv4_rejects_images_too_small() -> None:
    with pytest.raises(ValueError, match="16x16"):
        build_backbone("conv4", (1, 8, 8), torch.Generator())


def test_timm_model_by_name_is_seeded_and_leaves_global_rng_alone(tmp_path) -> None:
    state = torch.get_rng_state()
    a = build_backbone("timm:resnet18", (3, 32, 32), torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    b = build_backbone("timm:resnet18", (3, 32, 32), torch.Generator().manual_seed(0))
    assert a.out_features == 512 and same_weights(a, b)
    assert a.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
    # weights from a local file (the way pretrained weights arrive without a hub)
    path = tmp_path / "weights.pt"
    torch.save(a.state_dict(), path)
    c = build_backbone("timm:resnet18", (3, 32, 32), torch.Generator().manual_seed(9), weights=str(path))
    assert same_weights(a, c)
    d = build_backbone(f"timm:resnet18@{path}", (3, 32, 32), torch.Generator().manual_seed(9))  # as --hp gives it
    assert same_weights(a, d)
    # RGB weights on grey images: timm adapts the first convolution (sums over the colour channels)
    grey = build_backbone(f"timm:resnet18@{path}", (1, 32, 32), torch.Generator().manual_seed(9))
    assert torch.allclose(grey.conv1.weight, a.conv1.weight.sum(1, keepdim=True))


def test_timm_unknown_model_and_bad_weights_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="no model 'resnet19x'"):
        build_backbone("timm:resnet19x", (3, 32, 32), torch.Generator())
    bad = tmp_path / "bad.pt"
    torch.save({"nothing": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="do not fit"):
        build_backbone("timm:resnet18", (3, 32, 32), torch.Generator(), weights=str(bad))
    with pytest.raises(UserError, match="not found"):
        build_backbone(f"timm:resnet18@{tmp_path / 'absent.pth'}", (3, 32, 32), torch.Generator())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("norm", ["running", "batch"])
def test_vmapped_copies_give_each_episode_its_own_gradients_from_one_image(name: str, norm: str, device: str,
                                                                          one_thread) -> None:
    """A backbone called under vmap with a parameter set per episode (:func:`stacked_copies`), one image per
    episode (a fine-tuning minibatch's remainder), gives each episode the gradients its own module gives, float64.
    The per-episode modules keep their channels-last weights; stacked copies of those layouts made the vmapped
    convolution gradients wrong wherever a BatchNorm did not feed a ReLU (torch 2.14.1, CPU)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        shape, episodes = (3, 32, 32), 3
        net = build_backbone(name, shape, torch.Generator().manual_seed(0), norm=norm).eval().to(device)
        g = torch.Generator().manual_seed(1)
        params = stacked_copies(dict(net.named_parameters()), episodes)
        for v in params.values():
            v.add_(0.1 * torch.randn(v.shape, generator=g).to(device)).requires_grad_()
        buffers = dict(net.named_buffers())
        x = torch.randn(episodes, 1, *shape, generator=g).to(device)
        w = torch.randn(episodes, 1, net.out_features, generator=g).to(device)
        out = torch.func.vmap(lambda p, x: functional_call(net, (p, buffers), (x,)))(params, x)
        (out * w).sum().backward()
        for e in range(episodes):
            alone = copy.deepcopy(net)
            with torch.no_grad():
                for k, v in alone.named_parameters():
                    v.copy_(params[k][e])
            (alone(x[e]) * w[e]).sum().backward()
            for k, v in alone.named_parameters():
                torch.testing.assert_close(params[k].grad[e], v.grad, rtol=1e-9, atol=1e-9, msg=f"episode {e}, {k}")
    finally:
        torch.set_default_dtype(before)
