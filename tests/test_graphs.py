"""Training steps as CUDA graphs: eager on the CPU; on CUDA the replayed graph trains like the eager step."""

from __future__ import annotations

import pytest
import torch

from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSpec
from mtbench.methods.graphs import GraphedStep, capturable_adam, set_lr
from mtbench.methods import METHODS, FitContext, make_hparams


def test_on_the_cpu_every_call_runs_the_step_eagerly():
    seen = []
    step = GraphedStep(seen.append, torch.device("cpu"))
    for i in range(5):
        step(torch.tensor([i]))
    assert step.mode == "eager" and [int(t) for t in seen] == list(range(5))


def test_learning_rate_is_set_in_place_for_capturable_adam_and_plainly_otherwise():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = capturable_adam([p], 1e-3, torch.device("cpu"))
    assert not opt.defaults.get("capturable")
    set_lr(opt, 5e-4)
    assert opt.param_groups[0]["lr"] == 5e-4
    opt = torch.optim.Adam([p], lr=torch.tensor(1e-3))
    lr = opt.param_groups[0]["lr"]
    set_lr(opt, 2.5e-4)
    assert opt.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(2.5e-4)


def test_protonet_halves_its_learning_rate_as_steplr_did(monkeypatch):
    """lr_halve_every=2 over 5 episodes: 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4 (StepLR(step_size=2, gamma=0.5))."""
    seen = []
    real = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(float(self.param_groups[0]["lr"]))
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    fit(METHODS.get("protonet"), torch.device("cpu"), {"lr_halve_every": "2"}, iterations=5)
    assert seen == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4])


def fit(cls, device: torch.device, overrides: dict[str, str], iterations: int = 12):
    source = DATASETS.get("synthetic")(progress=False).load("train").to(device)
    spec = EpisodeSpec(ways=3, shots=1, queries=2, episodes=1)
    hp = make_hparams(cls, "synthetic", {"train_ways": "3", **overrides} if cls.name == "protonet" else
                      {"meta_batch": "4", **overrides})
    method = cls(hp, source.image_shape, torch.Generator().manual_seed(0), device)
    ctx = FitContext(source, spec, iterations, torch.Generator().manual_seed(1), device, progress=False)
    method.fit(ctx)
    return method, ctx


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("name", "overrides"), [("protonet", {}), ("maml", {"task_batching": "bmm"}),
                                                 ("maml", {"task_batching": "vmap"})])
def test_cuda_graph_trains_like_the_eager_step(name, overrides):
    cls, device = METHODS.get(name), torch.device("cuda")
    graphed, ctx = fit(cls, device, {**overrides, "cuda_graph": "true"})
    eager, eager_ctx = fit(cls, device, {**overrides, "cuda_graph": "false"})
    assert any("CUDA graph" in n for n in ctx.notes) and any("eager" in n for n in eager_ctx.notes)
    a, b = graphed.modules(), eager.modules()
    assert a.keys() == b.keys()
    for key in a:
        for (pname, x), y in zip(a[key].state_dict().items(), b[key].state_dict().values()):
            torch.testing.assert_close(x.float(), y.float(), rtol=1e-3, atol=1e-4, msg=f"{key}.{pname}")
