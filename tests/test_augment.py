"""Chen et al.'s pre-training augmentation (mtbench.methods.augment) and fine-tune's ``augment`` hparam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance
from torchvision.transforms.v2 import functional as TF

from mtbench.board.leaderboard import Entry, configuration, rows
from mtbench.board.labels import label
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods.augment import RATIO, SCALE, chen2019, crop_boxes, jitter, resized_crops
from mtbench.run import stages
from mtbench.run.runner import RunSpec
from support import result_doc


def test_crop_boxes_lie_inside_the_image_within_the_scale_and_ratio_and_follow_the_generator():
    boxes = crop_boxes(2000, 84, 60, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 84) & (left + w <= 60)).all())
    whole = (h == 84) & (w == 60)
    share, ratio = (h * w).float() / (84 * 60), w.float() / h.float()
    # rounding the sides to pixels moves a share or ratio by at most a pixel's worth
    assert bool((share[~whole] >= SCALE[0] * 0.9).all()) and bool((share <= 1).all())
    assert bool((ratio[~whole] >= RATIO[0] * 0.9).all()) and bool((ratio[~whole] <= RATIO[1] / 0.9).all())
    assert 0.3 < share.mean().item() < 0.7  # spread over the range, not stuck at one end
    assert torch.equal(boxes, crop_boxes(2000, 84, 60, torch.Generator().manual_seed(0)))
    assert not torch.equal(boxes, crop_boxes(2000, 84, 60, torch.Generator().manual_seed(1)))


def test_an_image_no_crop_fits_keeps_its_whole_self():
    # 1 pixel high, 100 wide: every draw's height rounds to 2 or more pixels, so none of the 10 fits
    assert torch.equal(crop_boxes(50, 1, 100, torch.Generator().manual_seed(0)), torch.tensor([[0, 0, 1, 100]]).repeat(50, 1))
    # 84x84: some images of a large batch fall back too, and the others do not
    whole = (crop_boxes(5000, 84, 84, torch.Generator().manual_seed(0))[:, 2:] == 84).all(1)
    assert 0 < int(whole.sum()) < 5000


@pytest.mark.parametrize("flip", [False, True])
def test_resized_crops_are_torchvisions_resized_crop_image_by_image(flip):
    x = torch.rand(4, 3, 84, 84, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[10, 5, 40, 60], [0, 0, 84, 84], [30, 20, 20, 30], [83, 83, 1, 1]])
    out = resized_crops(x, boxes, torch.full((4,), flip))
    for k, (t, l, h, w) in enumerate(boxes.tolist()):
        ref = TF.resized_crop(x[k], t, l, h, w, [84, 84], antialias=False)
        assert torch.allclose(out[k], ref.flip(-1) if flip else ref, atol=1e-5)


def test_jitter_is_pillows_imageenhance_brightness_contrast_colour_to_its_rounding():
    x = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 255).round()
    factors = torch.tensor([[1.3, 0.7, 1.2], [0.65, 1.35, 0.8], [1.0, 1.0, 1.0]])
    out = jitter(x / 255, factors) * 255
    for k in range(3):
        im = Image.fromarray(x[k].permute(1, 2, 0).byte().numpy())
        for enhance, r in zip((ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color), factors[k].tolist()):
            im = enhance(im).enhance(r)
        ref = torch.from_numpy(np.array(im)).permute(2, 0, 1).float()
        assert (out[k] - ref).abs().max().item() <= 4.0  # Pillow rounds to whole levels after each of the 3 steps
    assert torch.allclose(out[2], x[2], atol=1e-3)  # factors of 1 change nothing


@pytest.mark.parametrize("channels", [1, 3])
def test_chen2019_is_drawn_from_its_generator_alone_and_stays_in_range(channels):
    x = torch.rand(8, channels, 28, 28, generator=torch.Generator().manual_seed(4))
    before = torch.random.get_rng_state()
    a = chen2019(x, torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is neither read nor moved
    assert torch.equal(a, chen2019(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, chen2019(x, torch.Generator().manual_seed(6)))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert not torch.allclose(a, x, atol=0.05)


def _fit(tmp_path, method="finetune", **hp):
    spec = RunSpec(method=method, dataset="synthetic", episodes=EpisodeSpec(3, 1, 2, 4, seed=0), budget="3",
                   device="cpu", data_root=str(tmp_path / "data"), out=None, progress=False,
                   hparams=tuple((k, str(v).lower()) for k, v in hp.items()))
    r = stages.resolve(spec)
    d = stages.load(r)
    f = stages.fit(r, d)
    return f.method, stages.record(r, d, f, stages.score(r, d, f))


def test_finetune_pretrains_on_augmented_images_only_when_asked_and_labels_that_row(tmp_path, one_thread):
    plain, plain_doc = _fit(tmp_path)
    augmented, doc = _fit(tmp_path, augment=True)
    again, _ = _fit(tmp_path, augment=True)
    w = dict(plain.backbone.state_dict())
    wa, wb = dict(augmented.backbone.state_dict()), dict(again.backbone.state_dict())
    assert any(not torch.equal(w[k], wa[k]) for k in w)  # other images seen: other weights
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same draws: the same fit
    assert doc["method"]["hparams"]["augment"] is True and plain_doc["method"]["hparams"]["augment"] is False
    assert label(doc) == "finetune (augmented)" and label(plain_doc) == "finetune"
    assert configuration(doc) != configuration(plain_doc)


def test_an_older_finetune_result_without_the_augment_hparam_joins_the_row_of_a_new_one(one_thread):
    hp = {"head": "linear", "augment": False}
    new = result_doc("finetune", [1.0, 0.5], fit_seed=1)
    new["method"]["hparams"] = hp
    old = result_doc("finetune", [0.5, 0.5], fit_seed=0)
    old["method"]["hparams"] = {"head": "linear"}
    assert configuration(old) == configuration(new)
    stale = {**old, "method": {**old["method"], "version": "0"}}
    assert configuration(stale) != configuration(new)  # another version's results never join today's rows
    joined = rows([Entry(Path("old.json"), old), Entry(Path("new.json"), new)])
    assert [r.seeds for r in joined] == [[0, 1]]


def test_protonet_augments_its_pretraining_only_when_asked_and_labels_that_row(tmp_path, one_thread):
    plain, plain_doc = _fit(tmp_path, "protonet", pretrain_steps=2)
    augmented, doc = _fit(tmp_path, "protonet", pretrain_steps=2, pretrain_augment=True)
    w, wa = dict(plain.backbone.state_dict()), dict(augmented.backbone.state_dict())
    assert any(not torch.equal(w[k], wa[k]) for k in w)
    assert label(doc) == "protonet (augmented pre-training)" and label(plain_doc) == "protonet"
    # without pre-training there is nothing to augment: the same fit, the same row
    _, none_doc = _fit(tmp_path, "protonet", pretrain_augment=True)
    assert label(none_doc) == "protonet"
