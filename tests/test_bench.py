"""``mtbench bench`` and the measuring code it shares with the pytest-benchmark suite (tiny, CPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mtbench.bench import workloads as bench
from mtbench.cli import main
from mtbench.core.runtime import device_name

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str):
    return CliRunner().invoke(main, ["bench", "--no-malloc-tuning", *args])


def test_bench_prints_a_table_and_writes_json(tmp_path, one_thread):
    out = tmp_path / "out" / "bench.json"
    result = invoke("--device", "cpu", "--meta-batch", "1", "--repeats", "1", "--episodes", "2",
                    "--data-root", str(tmp_path / "no-data"), "--out", str(out), "--evaluation", "maml,scratch")
    assert result.exit_code == 0, result.output
    table = result.stdout
    for column in ("method", "measurement", "tasks/s", "images/s", "ms/step", "peak memory", "device"):
        assert column in table
    for method, measurement in (("episodes", "sample"), ("episodes", "fixed set"), ("protonet", "train"),
                                ("protonet", "evaluate"), ("protonet", "forward"), ("maml-bmm", "meta-step"),
                                ("maml-vmap", "meta-step"), ("maml-loop", "meta-step")):
        assert any(line.split()[:2] == [method, measurement.split()[0]] for line in table.splitlines()), method
    assert "MAML bmm / per-task reference loop, tasks/s: meta-batch 1:" in table
    assert "MAML vmap / per-task reference loop, tasks/s: meta-batch 1:" in table
    assert "ProtoNet evaluator / bare forward passes" in table
    assert device_name(torch.device("cpu")) in table and "synthetic" in table
    assert f"wrote {out}" in table

    doc = json.loads(out.read_text())
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temp file left beside it
    assert doc["kind"] == "mtbench-bench" and doc["schema_version"] == 1
    prov = doc["provenance"]
    assert prov["device"] == device_name(torch.device("cpu")) and prov["device_type"] == "cpu"
    assert prov["torch"] == str(torch.__version__) and "git_commit" in prov and prov["timestamp"]
    assert doc["machine"]["device_name"] == prov["device"]
    assert doc["config"]["real_data"] is False and doc["config"]["meta_batches"] == [1]
    rows = {(r["method"], r["measurement"]): r for r in doc["measurements"]}
    assert len(rows) == len(doc["measurements"]) == 14
    for row in rows.values():
        assert row["device"] == "cpu" and len(row["seconds"]) == 1
        assert row["tasks_per_s"] > 0 and row["images_per_s"] > 0 and row["peak_memory_bytes"] > 0
    per_task = 5 * (1 + 15)
    train = rows[("protonet", "train")]
    segment = bench.train_segment(torch.device("cpu"))
    assert train["config"]["steps_per_timed_step"] == train["tasks_per_step"] == segment
    assert train["images_per_step"] == per_task * segment
    assert rows[("episodes", "fixed set")]["tasks_per_step"] == 2
    assert rows[("maml-vmap", "meta-step")]["images_per_step"] == rows[("maml-loop", "meta-step")]["images_per_step"] \
        == rows[("maml-bmm", "meta-step")]["images_per_step"] == per_task
    assert rows[("maml-bmm", "meta-step")]["config"]["hparams"]["task_batching"] == "bmm"
    assert rows[("maml-loop", "meta-step")]["config"]["hparams"]["cuda_graph"] is False
    assert set(doc["ratios"]["maml_over_loop"]) == {"bmm", "vmap", "auto"}
    # the learn2learn-style peer: the same tasks and images per meta-step, and its evaluation of the same episodes
    assert rows[("maml-peer", "meta-step")]["images_per_step"] == per_task
    assert rows[("maml-peer", "evaluate (last step)")]["tasks_per_step"] == 2
    assert set(doc["ratios"]["maml_train_over_peer"]) == {"1"} and doc["ratios"]["maml_eval_last_over_peer"] > 0
    # each evaluated method against its work-bound time: FLOPs counted, a best rate measured, a ratio printed
    for name in ("maml", "scratch"):
        config = rows[(name, "evaluate")]["config"]
        assert config["flops_per_episode"] > config["backward_flops_per_episode"] > 0 and config["work_bound_ms"] > 0
        assert config["best_rate"]["batch"] in (16, 64, 256)
        # the training pass's convolution backward is about twice its forward (not the first layer's input grad)
        assert 0.5 < config["best_rate"]["forward+backward"]["backward_share"] < 2 / 3
        assert {config["best_rate"][k]["batch"] for k in ("forward", "forward+backward")} <= {16, 64, 256}
        assert f"{name} evaluation / its work-bound time" in table
    # scratch trains a network per episode (forward and backward, 100 steps): more work than MAML's 3 steps
    assert rows[("scratch", "evaluate")]["config"]["flops_per_episode"] > \
        3 * rows[("maml", "evaluate")]["config"]["flops_per_episode"]
    assert "learn2learn-style loop" in table
    # a chunked evaluator measured on fewer episodes than its chunk holds says so (scratch: 8 Omniglot-sized
    # episodes a chunk on the CPU); a per-episode one has nothing to say
    assert rows[("scratch", "evaluate")]["config"]["chunk_episodes"] == 2
    assert rows[("scratch", "evaluate")]["config"]["chunk_capacity"] == 8
    assert rows[("scratch", "evaluate")]["config"]["chunk_episodes_600"] == 8
    assert rows[("maml", "evaluate")]["config"]["chunk_capacity"] == 1
    assert "chunks of 2 episodes here, of 8 in an evaluation of 600: measure with --episodes 8 or more" in table
    assert not any("chunks of" in line for line in table.splitlines() if line.startswith("maml evaluation"))
    assert doc["ratios"]["maml_run_default"] == "loop" and doc["ratios"]["maml_batched_variant"] == "bmm"
    assert set(doc["ratios"]["maml_batched_over_loop"]) == {"1"}
    assert doc["ratios"]["protonet_eval_overhead"] > 0


def test_the_peer_loop_is_maml(one_thread) -> None:
    """The learn2learn-style loop computes MAML's meta-gradient: in float64, its second-order gradient equals
    the textbook reference's (:func:`~mtbench.baselines.maml.reference_meta_loss`) on the same network."""
    from mtbench.baselines.maml import reference_meta_loss
    from mtbench.bench import peer

    g = torch.Generator().manual_seed(0)
    model = peer.conv4((1, 28, 28), 5, g).double()
    sx, qx = torch.randn(2, 5, 1, 28, 28, generator=g).double(), torch.randn(2, 10, 1, 28, 28, generator=g).double()
    sy, qy = torch.arange(5).expand(2, -1), torch.arange(5).repeat(2).expand(2, -1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes nothing: the gradients stay readable
    peer.meta_step(model, opt, sx, sy, qx, qy, lr=0.4, steps=2)
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference_meta_loss(model, dict(model.named_parameters()), sx, sy, qx, qy, steps=2, lr=0.4).backward()
    for a, b in zip(ours, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(float(a.abs().max()) > 0 for a in ours)


@pytest.mark.parametrize(("args", "mentions"), [
    (["--repeats", "0"], ["--repeats 0"]),
    (["--episodes", "0"], ["--episodes 0"]),
    (["--meta-batch", "x"], ["--meta-batch x", "1,8,32"]),
    (["--meta-batch", "8,0"], ["--meta-batch 8,0"]),
    (["--evaluation", "mamml"], ["mamml"]),
    (["--device", "tpu"], ["tpu"]),
    (["--out", "{tmp}"], ["is a folder"]),
    (["--out", "{tmp}/bench.txt"], [".json"]),
])
def test_bad_options_are_one_line_errors(tmp_path, args, mentions):
    result = invoke(*[a.format(tmp=tmp_path) for a in args], "--data-root", str(tmp_path / "no-data"))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtbench: error:"), result.output
    for text in mentions:
        assert text in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible here")
    result = invoke("--device", "cuda", "--out", str(tmp_path / "b.json"))
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "--device cuda" in result.output
    assert not (tmp_path / "b.json").exists()


def test_meta_batches_parse_from_commas_and_repeats():
    assert bench.parse_meta_batches(["1,8", "32", "8"]) == (1, 8, 32)


def test_measure_warms_up_then_times_the_repeats():
    calls = []
    w = bench.measure(lambda: bench._warm(bench.Workload("m", "x", lambda: calls.append(1), 2, 10,
                                                         torch.device("cpu"))), repeats=3)
    assert len(calls) == 4 and len(w.seconds) == 3  # one untimed warm-up
    row = w.as_dict()
    assert row["tasks_per_s"] == pytest.approx(2 / w.median) and row["images_per_s"] == pytest.approx(10 / w.median)


def test_a_pair_is_timed_in_turn_step_for_step():
    calls = []

    def build(name: str):
        return lambda: bench._warm(bench.Workload(name, "x", lambda: calls.append(name), 1, 1, torch.device("cpu")))

    ours, peer = bench.measure_pair((build("ours"), build("peer")), repeats=4)
    assert calls == ["ours", "peer"] + ["ours", "peer", "peer", "ours", "ours", "peer", "peer", "ours"]  # warm-ups first
    assert (ours.method, peer.method) == ("ours", "peer") and len(ours.seconds) == len(peer.seconds) == 4


def test_ratios_pair_batched_variants_with_loop_and_evaluator_with_forward():
    def row(method, measurement, batch, ms, tasks=1):
        return {"method": method, "measurement": measurement, "meta_batch": batch, "ms_per_step": ms,
                "tasks_per_s": tasks / ms * 1000}

    rows = [row("maml-vmap", "meta-step", 8, 100, 8), row("maml-loop", "meta-step", 8, 300, 8),
            row("maml-vmap", "meta-step", 32, 100, 32), row("maml-bmm", "meta-step", 8, 50, 8),
            row("maml-loop-graph", "meta-step", 8, 150, 8), row("protonet", "evaluate", None, 12),
            row("protonet", "forward", None, 10)]
    r = bench.ratios(rows, "cuda")
    assert r["maml_over_loop"] == {"vmap": {"8": pytest.approx(3.0)}, "bmm": {"8": pytest.approx(6.0)},
                                   "loop-graph": {"8": pytest.approx(2.0)}}  # vmap 32 has no loop partner
    assert r["maml_run_default"] == r["maml_batched_variant"] == "vmap"
    assert r["maml_batched_over_loop"] == {"8": pytest.approx(3.0)}
    assert r["protonet_eval_overhead"] == pytest.approx(1.2)


# -- the pytest-benchmark suite ------------------------------------------------------------------
def test_default_run_leaves_the_benchmark_suite_out(request):
    assert "benchmarks" in request.config.getini("norecursedirs")
    assert not any("benchmarks" in Path(str(item.path)).parts for item in request.session.items)


def test_benchmark_command_collects_the_suite():
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/benchmarks", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    for name in ("test_episode_sampling[cpu]", "test_protonet_training[cpu]", "test_protonet_evaluation[evaluate-cpu]",
                 "test_protonet_evaluation[forward-cpu]", "test_maml_meta_step[vmap-32-cpu]", "test_maml_meta_step[bmm-32-cpu]",
                 "test_maml_meta_step[loop-32-cpu]", "test_maml_meta_step[vmap-1-cuda]"):
        assert any(i.endswith(name) for i in ids), name


def test_benchmark_machine_info_names_device_torch_and_commit():
    spec = importlib.util.spec_from_file_location("bench_conftest", ROOT / "tests" / "benchmarks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    info = {"cpu": {"brand_raw": "kept"}}
    module.pytest_benchmark_update_machine_info(None, info)
    assert info["cpu"] == {"brand_raw": "kept"}
    expected = torch.cuda.get_device_name() if torch.cuda.is_available() else device_name(torch.device("cpu"))
    assert info["device_name"] == expected and info["torch"] == str(torch.__version__)
    assert "git_commit" in info and info["mtbench"]["threads"] == torch.get_num_threads()


def test_stepped_context_runs_one_fit_segment_by_segment_and_closes():
    """The CUDA training workloads: one running fit, advanced a segment per timed step, ended by close()."""
    seen, ended = [], []

    def fit(ctx):
        for i in ctx.loop("fake fit"):
            seen.append(i)
            ctx.count(1, 10)
        ended.append(True)

    data = bench.synthetic_split("fit", 4)
    ctx = bench._SteppedContext(data, bench.SPEC, 0, torch.Generator(), torch.device("cpu"), progress=False, segment=3)
    ctx.start(fit)
    ctx.advance()
    assert seen == [0, 1, 2] and ctx.tasks == 3
    ctx.advance()
    assert seen == [0, 1, 2, 3, 4, 5] and not ended
    ctx.close()
    assert ended == [True] and len(seen) == 6


def test_stepped_context_hands_a_fit_error_to_the_measuring_thread():
    def fit(ctx):
        for _ in ctx.loop("failing fit"):
            raise RuntimeError("boom")

    ctx = bench._SteppedContext(bench.synthetic_split("fit", 4), bench.SPEC, 0, torch.Generator(),
                                torch.device("cpu"), progress=False, segment=2)
    ctx.start(fit)
    with pytest.raises(RuntimeError, match="boom"):
        ctx.advance()


def test_stepped_context_refuses_a_fit_with_a_stage_of_its_own():
    """ProtoNet's pre-training asks ctx.loop for a number of steps: a stepped fit would never end it."""
    def fit(ctx):
        for _ in ctx.loop("pre-training", steps=10):
            pass

    ctx = bench._SteppedContext(bench.synthetic_split("fit", 4), bench.SPEC, 0, torch.Generator(),
                                torch.device("cpu"), progress=False, segment=2)
    ctx.start(fit)
    with pytest.raises(ValueError, match="one-stage fits"):
        ctx.advance()


def test_the_work_bound_times_training_passes_at_their_rate_and_the_rest_at_the_forward_rate() -> None:
    """300 FLOPs of which 100 are convolution backward, in a backbone whose training pass is 2/3 backward: 150 of
    training passes at 50 FLOP/s (3 s) and 150 of forward passes at 100 (1.5 s)."""
    from mtbench.bench.evaluation import work_bound_seconds

    rate = {"flops_per_s": 100.0, "forward": {"flops_per_s": 100.0},
            "forward+backward": {"flops_per_s": 50.0, "backward_share": 2 / 3}}
    assert work_bound_seconds(300.0, 100.0, rate) == pytest.approx(4.5)
    assert work_bound_seconds(300.0, 0.0, rate) == pytest.approx(3.0)  # no training pass: all forward
    assert work_bound_seconds(300.0, 250.0, rate) == pytest.approx(6.0)  # never more training than there is work


def test_chunk_sizes_compare_a_measurement_with_a_600_episode_evaluation() -> None:
    """The chunk a bench measurement ran against the one a 600-episode evaluation runs: a method whose chunk may
    hold more than 600 episodes (a GPU's) is measured in full by 600, one of 32 by 32, a per-episode one by 1."""
    from types import SimpleNamespace

    from mtbench.bench.evaluation import chunk_sizes
    from mtbench.data.episodes import EpisodeSet, EpisodeSpec

    episodes = EpisodeSet(bench.synthetic_split("test", 8), EpisodeSpec(5, 1, 15, 10, seed=0))

    def method(chunk: int | None, batched: bool = True) -> SimpleNamespace:
        return SimpleNamespace(adapt_batch=(lambda *a: None) if batched else None, predict_batch=None,
                               chunk_episodes=chunk)

    assert chunk_sizes(method(32), episodes) == {"chunk_episodes": 10, "chunk_capacity": 32, "chunk_episodes_600": 32}
    assert chunk_sizes(method(5000), episodes)["chunk_episodes_600"] == 600
    assert chunk_sizes(method(599), episodes)["chunk_episodes_600"] == 300  # two chunks of 300, not 599 and 1
    assert chunk_sizes(method(None, batched=False), episodes) == {"chunk_episodes": 1, "chunk_capacity": 1,
                                                                  "chunk_episodes_600": 1}
