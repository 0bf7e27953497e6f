"""Reptile and Scratch adapt a chunk of episodes as they adapt each episode alone, at every scored step.

In float64 on generated data: the logits of ``adapt_batch`` on a chunk against those of ``adapt`` episode by
episode (Reptile from carried Adam moments, transductive or not; Scratch full-batch and with minibatches), and
the evaluator's chunked path against its per-episode one.
"""

from __future__ import annotations

import pytest
import torch

from mtbench.data import DATASETS
from mtbench.data.episodes import EpisodeSet, EpisodeSpec
from mtbench.methods import METHODS, make_hparams
from mtbench.methods.functional import detached, params_of
from support import DEVICES, on_device

EPISODES = 3
CASES = {
    "reptile": ("reptile", {"eval_steps": "3", "report_steps": "0,2"}),
    "reptile-fresh-moments": ("reptile", {"eval_steps": "2", "report_steps": "1", "carry_moments": "false"}),
    "reptile-transductive": ("reptile-transductive", {"eval_steps": "3", "report_steps": "0,2"}),
    # steps on 3 of the 5 support images, consecutive batches of shuffled passes (a batch spans two passes)
    "reptile-eval-batch": ("reptile", {"eval_steps": "3", "report_steps": "0,2", "eval_batch": "3"}),
    "scratch": ("scratch", {"steps": "3", "report_steps": "0,1"}),
    "scratch-minibatches": ("scratch", {"steps": "4", "report_steps": "0,2", "batch_size": "2"}),
}
# the labelled steps each case yields (report_steps and the last step)
STEPS = {"reptile": [0, 2, 3], "reptile-fresh-moments": [1, 2], "reptile-transductive": [0, 2, 3],
         "reptile-eval-batch": [0, 2, 3],
         "scratch": [0, 1, 3], "scratch-minibatches": [0, 2, 4]}


@pytest.fixture(scope="module")
def chunk():
    test = DATASETS.get("synthetic")(progress=False).load("test")
    sx, sy, qx, qy = EpisodeSet(test, EpisodeSpec(5, 1, 2, EPISODES, seed=0)).batch(0, EPISODES)
    return test.image_shape, sx.double(), sy, qx.double()


def _method(name: str, overrides: dict[str, str], shape, device: str = "cpu") -> object:
    cls = METHODS.get(name)
    method = cls(make_hparams(cls, "synthetic", overrides, "2"), shape, torch.Generator().manual_seed(0),
                 torch.device(device))
    method.prepare(5)
    if name.startswith("reptile"):
        # moments as meta-training leaves them (an unfitted model has none): random, v > 0, after 7 steps
        g = torch.Generator().manual_seed(1)
        _, m, v = method.moments.state()
        method.moments.update(7, {k: (torch.randn(t.shape, generator=g) * 1e-2).to(device) for k, t in m.items()},
                              {k: (torch.rand(t.shape, generator=g) * 1e-4).to(device) for k, t in v.items()})
    return method


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_a_chunk_adapts_as_its_episodes_do_one_by_one(case, device, chunk, one_thread) -> None:
    shape, sx, sy, qx = on_device(chunk, device)
    name, overrides = CASES[case]
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        method = _method(name, overrides, shape, device)
        assert method.adapt_batch is not None
        with torch.no_grad():
            alone = [list(method.adapt(sx[e], sy[e], 5)) for e in range(EPISODES)]
            alone_logits = [[p(qx[e]) for p in predictors] for e, predictors in enumerate(alone)]
            together = list(method.adapt_batch(sx, sy, 5))
            together_logits = [p(qx) for p in together]
    finally:
        torch.set_default_dtype(before)
    assert [p.step for p in together] == [p.step for p in alone[0]] == STEPS[case]
    for step, logits in enumerate(together_logits):
        expected = torch.stack([alone_logits[e][step] for e in range(EPISODES)])
        assert logits.dtype == torch.float64 and logits.shape == expected.shape == (EPISODES, 10, 5)
        torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)
        assert torch.equal(logits.argmax(-1), expected.argmax(-1))
    # the steps adapt, and the episodes differ: neither side is a constant that would match trivially
    assert not torch.allclose(together_logits[0], together_logits[-1])
    assert not torch.allclose(together_logits[-1][0], together_logits[-1][1])


@pytest.mark.parametrize("size", [1, EPISODES])
def test_scratch_chunks_train_bit_for_bit_as_episodes_do_in_float32(size, chunk, one_thread) -> None:
    """In float32 too (full-batch steps, on the CPU): the gradients of the convolution biases, each followed by
    BatchNorm, are rounding noise that Adam turns into steps of ``lr``, so a chunk must round as each episode
    does alone or the running statistics, hence the accuracies, move."""
    shape, sx, sy, qx = chunk
    sx, qx = sx.float(), qx.float()
    method = _method("scratch", {"steps": "3", "report_steps": "0,1"}, shape)
    with torch.no_grad():
        alone = [[p(qx[e]) for p in method.adapt(sx[e], sy[e], 5)] for e in range(EPISODES)]
        together = [[] for _ in range(EPISODES)]
        for lo in range(0, EPISODES, size):
            for p in method.adapt_batch(sx[lo:lo + size], sy[lo:lo + size], 5):
                for e, logits in enumerate(p(qx[lo:lo + size]), start=lo):
                    together[e].append(logits)
    for e in range(EPISODES):
        assert len(together[e]) == len(alone[e]) == 3
        for step, (a, b) in enumerate(zip(alone[e], together[e])):
            assert torch.equal(a, b), f"episode {e}, step {step}: {(a - b).abs().max():.2e} apart"


@pytest.mark.parametrize("name", ["reptile", "reptile-transductive"])
def test_a_reptile_chunk_of_one_episode_is_adapt_bit_for_bit(name, chunk, one_thread) -> None:
    shape, sx, sy, qx = chunk
    method = _method(name, {"eval_steps": "2", "report_steps": "0"}, shape)
    sx, qx = sx[:1].float(), qx[:1].float()
    with torch.no_grad():
        alone = [(p.step, p(qx[0])) for p in method.adapt(sx[0], sy[0], 5)]
        together = [(p.step, p(qx)) for p in method.adapt_batch(sx, sy[:1], 5)]
    assert [s for s, _ in together] == [s for s, _ in alone] == [0, 2]
    assert all(torch.equal(a.unsqueeze(0), b) for (_, a), (_, b) in zip(alone, together))


def test_a_non_transductive_reptile_query_sees_only_the_support_set(chunk, one_thread) -> None:
    """Predicting one query alone or among others gives the same logits (and reptile-transductive does not)."""
    shape, sx, sy, qx = chunk
    for name, independent in (("reptile", True), ("reptile-transductive", False)):
        method = _method(name, {"eval_steps": "1"}, shape)
        with torch.no_grad():
            predictor = list(method.adapt_batch(sx.float(), sy, 5))[-1]
            both = predictor(qx[:, :2].float())
            first = predictor(qx[:, :1].float())
        assert torch.allclose(both[:, :1], first, atol=1e-5) == independent


@pytest.mark.parametrize("bound", ["PREDICT_VALUES", "CPU_PASS_QUERIES"])
def test_non_transductive_reptile_predicts_in_passes_as_in_one(bound, chunk, one_thread, monkeypatch) -> None:
    """Queries vmapped in passes of a bounded size (a 20-way episode's in one pass took over 15 GB; on the CPU,
    small passes stay in the caches) get the logits they get in one pass, bit for bit: each query's batch is
    the support set and itself, computed alone."""
    from mtbench.baselines import reptile

    shape, sx, sy, qx = chunk
    method = _method("reptile", {"eval_steps": "1"}, shape)
    images = len(sx[0]) + 1  # per query: the support set and itself
    with torch.no_grad():
        predictor = list(method.adapt(sx[0].float(), sy[0], 5))[-1]
        one_pass = predictor(qx[0].float())
        if bound == "PREDICT_VALUES":
            monkeypatch.setattr(reptile, "PREDICT_VALUES", 3 * images * sx[0, 0].numel())  # 3 queries a pass
        else:
            monkeypatch.setattr(reptile, "CPU_PASS_QUERIES", 3)
        calls = []  # one vmap per pass: the bound is applied
        monkeypatch.setattr(reptile, "vmap", lambda fn, *a, **k: calls.append(1) or torch.func.vmap(fn, *a, **k))
        passes = predictor(qx[0].float())
    assert len(calls) == -(-len(qx[0]) // 3) > 1
    assert torch.equal(one_pass, passes)


def test_a_chunks_non_transductive_passes_share_the_bound(chunk, one_thread, monkeypatch) -> None:
    """Vmapped over a chunk of episodes, a pass holds PREDICT_VALUES input values over all of them, not per episode
    (a CUDA chunk of 200 Omniglot episodes, up to 2048 images a pass each, overflowed CUDA's 32-bit convolution
    indexing), with the logits of one unbounded pass, bit for bit (each query's batch is computed alone)."""
    from mtbench.baselines import reptile

    shape, sx, sy, qx = chunk
    method = _method("reptile", {"eval_steps": "1"}, shape)
    sx, qx = sx.float(), qx.float()
    with torch.no_grad():
        predictor = list(method.adapt_batch(sx, sy, 5))[-1]
        whole = predictor(qx)
        # 3 queries a pass for one episode's support set and query, so 1 a pass for the chunk's 3 episodes
        monkeypatch.setattr(reptile, "PREDICT_VALUES", 3 * (len(sx[0]) + 1) * sx[0, 0].numel())
        calls = []
        monkeypatch.setattr(reptile, "vmap", lambda fn, *a, **k: calls.append(1) or torch.func.vmap(fn, *a, **k))
        predictor = list(method.adapt_batch(sx, sy, 5))[-1]
        calls.clear()
        passes = predictor(qx)
    assert EPISODES == 3 and len(calls) == qx.shape[1]  # one query a pass (the episodes' vmap was made before)
    assert torch.equal(passes, whole)


def test_scratch_with_another_backbone_evaluates_episode_by_episode() -> None:
    cls = METHODS.get("scratch")
    method = cls(make_hparams(cls, "synthetic", {"backbone": "resnet12"}, "2"), (1, 28, 28),
                 torch.Generator().manual_seed(0), torch.device("cpu"))
    assert method.adapt_batch is None
    assert cls(make_hparams(cls, "synthetic", {"backbone": "conv4-32"}, "2"), (1, 28, 28),
               torch.Generator().manual_seed(0), torch.device("cpu")).adapt_batch is not None


def test_scratch_chunks_several_episodes_of_small_images_on_the_cpu() -> None:
    """Omniglot-sized episodes share a chunk on the CPU (their steps are overhead-bound); 84x84 ones do not."""
    from mtbench.baselines import scratch

    cls = METHODS.get("scratch")
    hp = make_hparams(cls, "synthetic", {}, "2")
    small = cls(hp, (1, 28, 28), torch.Generator(), torch.device("cpu"))
    large = cls(hp, (3, 84, 84), torch.Generator(), torch.device("cpu"))
    assert small.chunk_episodes == scratch.CPU_CHUNK_EPISODES > 1 and large.chunk_episodes is None
    from mtbench.bench.workloads import synthetic_split
    from mtbench.run.evaluate import episode_chunks

    # Omniglot-shaped 5-way 1-shot episodes with 15 queries: one a chunk by the CPU's default bound
    episodes = EpisodeSet(synthetic_split("test", 8), EpisodeSpec(5, 1, 15, 3 * scratch.CPU_CHUNK_EPISODES, seed=0))
    assert {b - a for a, b in episode_chunks(episodes)} == {1}
    assert {b - a for a, b in episode_chunks(episodes, at_least=small.chunk_episodes)} == {scratch.CPU_CHUNK_EPISODES}


@pytest.mark.parametrize("name,overrides", [("reptile", {"eval_steps": "2", "report_steps": "0"}),
                                            ("scratch", {"steps": "3", "report_steps": "0,1", "batch_size": "3"})])
def test_the_evaluator_scores_chunks_as_it_scores_episodes(name, overrides, one_thread) -> None:
    """Through :func:`evaluate`: chunks of 2 episodes against the per-episode reference, same accuracy of every
    episode at every step, the same steps."""
    from mtbench.run.evaluate import evaluate

    test = DATASETS.get("synthetic")(progress=False).load("test")
    method = _method(name, overrides, test.image_shape)
    episodes = EpisodeSet(test, EpisodeSpec(5, 1, 3, 4, seed=1))
    chunked = evaluate(method, episodes, progress=False, max_values=2 * 5 * 4 * 3 * 16 * 16)
    alone = evaluate(method, episodes, progress=False, batched=False)
    assert chunked["evaluation"]["batched_episodes"] == 2 and alone["evaluation"]["batched_episodes"] is None
    assert [s["step"] for s in chunked["accuracy"]["by_step"]] == [s["step"] for s in alone["accuracy"]["by_step"]]
    assert chunked["accuracy"]["per_episode"] == alone["accuracy"]["per_episode"]
    for a, b in zip(chunked["accuracy"]["by_step"], alone["accuracy"]["by_step"]):
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-12)


def test_reptile_tasks_one_after_the_other_adapt_as_vmapped(chunk, one_thread) -> None:
    """Meta-training's tasks: the CPU's loop over the meta-batch gives the vmapped path's adapted weights and Adam
    moments (float64, 2 tasks of 2 inner steps from carried moments)."""
    shape, sx, sy, _ = chunk
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        method = _method("reptile", {}, shape)
        params = detached(params_of(method.model))
        xb = torch.stack([sx[:2], sx[1:3]], dim=1)  # [2 tasks, 2 steps, 5 images, C, H, W]
        yb = torch.stack([sy[:2], sy[1:3]], dim=1)
        looped = method._adapt_tasks(params, method._start_state(5), xb, yb, loop=True)
        vmapped = method._adapt_tasks(params, method._start_state(5), xb, yb, loop=False)
    finally:
        torch.set_default_dtype(before)
    for ours, theirs in zip(looped, vmapped):
        assert ours.keys() == theirs.keys() == params.keys()
        for k in ours:
            assert ours[k].shape == (2, *params[k].shape) and ours[k].dtype == torch.float64
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-9, atol=1e-12)
    weights = next(iter(looped[0].values()))
    assert not torch.allclose(weights[0], weights[1])  # the tasks adapted apart


def test_cycled_batches_run_through_shuffled_passes() -> None:
    """Nichol et al.'s minibatches: consecutive batches of shuffled passes, a batch running on into the next pass."""
    from mtbench.methods.training import cycled_batches

    picks = cycled_batches(5, 3, 4, torch.Generator().manual_seed(0))  # 12 draws: two passes and 2 of a third
    assert picks.shape == (4, 3) and picks.dtype == torch.int64
    flat = picks.flatten().tolist()
    assert sorted(flat[:5]) == sorted(flat[5:10]) == [0, 1, 2, 3, 4]  # each pass covers every item once
    assert len(set(flat[10:])) == 2
    assert flat[:5] != flat[5:10]  # each pass has its own order
    assert torch.equal(picks, cycled_batches(5, 3, 4, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", ["reptile", "reptile-transductive"])
def test_reptile_eval_batch_adapts_each_episode_on_its_own_draws(name, chunk, one_thread) -> None:
    """``eval_batch`` steps on part of the support set, drawn from the episode's own generator: the same episode
    adapts the same way twice and whichever variant scores it; other episodes draw other batches; a batch as
    large as the support set is the whole set, as ``eval_batch=0``."""
    shape, sx, sy, qx = chunk
    sx, qx = sx.float(), qx.float()

    def logits(method_name: str, episode: int, **hp: str) -> torch.Tensor:
        method = _method(method_name, {"eval_steps": "3", "report_steps": "3", **hp}, shape)
        with torch.no_grad():
            return list(method.adapt(sx[episode], sy[episode], 5))[-1](qx[episode])

    method = _method(name, {"eval_steps": "4", "eval_batch": "2"}, shape)
    picks = [method._eval_picks(sx[e]) for e in range(EPISODES)]
    assert picks[0].shape == (4, 2) and torch.equal(picks[0], method._eval_picks(sx[0]))
    assert not torch.equal(picks[0], picks[1])
    other = _method("reptile-transductive" if name == "reptile" else "reptile", {"eval_steps": "4", "eval_batch": "2"},
                    shape)
    assert torch.equal(other._eval_picks(sx[0]), picks[0])
    assert torch.equal(logits(name, 0, eval_batch="3"), logits(name, 0, eval_batch="3"))
    assert not torch.allclose(logits(name, 0, eval_batch="3"), logits(name, 0))
    assert torch.equal(logits(name, 0, eval_batch=str(len(sx[0]))), logits(name, 0))


def test_reptile_eval_batch_must_not_be_negative() -> None:
    from mtbench.core.errors import UserError

    with pytest.raises(UserError, match=r"--hp eval_batch=-1: .* or 0 for the whole support set"):
        make_hparams(METHODS.get("reptile"), "synthetic", {"eval_batch": "-1"}, "2")
