"""``mtbench reproduce``: a re-run of a result's recorded spec, paired with the file episode by episode.

The verdict rules on generated results; then a real Omniglot run reproduced (identical on this machine)
and the same file forged consistently (per-episode accuracies, mean and interval edited together, so that
``validate`` passes) caught as DIFFERS.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mtbench.board.reproduce import TOLERANCE, compare, reproduce
from mtbench.cli import main
from mtbench.core.metrics import mean_ci95
from mtbench.data.episodes import EpisodeSpec
from mtbench.results import read_result, validate
from mtbench.results.integrity import check
from mtbench.run.runner import RunSpec, run
from support import init_doc, put_result, requires_real_data, result_doc, shared_root

RECORDED = [0.2, 0.6, 1.0, 0.8]


def rerun(values: list[float], **provenance) -> dict:
    doc = result_doc("protonet", values)
    doc["provenance"].update(provenance)
    return doc


def test_the_same_numbers_on_the_same_hardware_are_reproduced() -> None:
    outcome = compare(result_doc("protonet", RECORDED), rerun(RECORDED), Path("r.json"))
    assert outcome.verdict == "REPRODUCED" and outcome.identical and outcome.same_hardware
    assert outcome.line().startswith("REPRODUCED  r.json: identical on every episode")
    assert outcome.record["verdict"] == "REPRODUCED" and outcome.record["mean_difference"] == 0.0


def test_one_changed_episode_on_the_same_hardware_differs() -> None:
    outcome = compare(result_doc("protonet", RECORDED), rerun([0.2, 0.6, 1.0, 0.6]), Path("r.json"))
    assert outcome.verdict == "DIFFERS" and outcome.changed == 1
    assert outcome.mean_difference == pytest.approx(-0.05)
    assert "1/4 episodes differ, paired difference -0.0500" in outcome.line()


def test_other_hardware_is_held_to_the_tolerance() -> None:
    other = {"device": "Another CPU (8 threads)", "threads": 8}
    near = [0.2, 0.6, 1.0, 0.8 + 4 * TOLERANCE * 0.9]  # mean difference 0.9 x the tolerance
    assert compare(result_doc("protonet", RECORDED), rerun(near, **other), Path("r")).verdict == "REPRODUCED"
    far = [0.2, 0.6, 1.0, 0.8 + 4 * TOLERANCE * 1.5]
    outcome = compare(result_doc("protonet", RECORDED), rerun(far, **other), Path("r"))
    assert outcome.verdict == "DIFFERS" and not outcome.same_hardware and "tolerance 0.01" in outcome.line()


def test_the_same_gpu_is_held_to_the_tolerance_not_to_identity() -> None:
    """CUDA's kernels do not round alike twice: a re-run on the same GPU may flip a prediction, within the
    tolerance; beyond it, it differs."""
    gpu = {"device": "NVIDIA H200", "device_type": "cuda", "threads": None}
    recorded = rerun(RECORDED, **gpu)
    near = [0.2, 0.6, 1.0, 0.8 + 4 * TOLERANCE * 0.9]
    outcome = compare(recorded, rerun(near, **gpu), Path("r"))
    assert outcome.verdict == "REPRODUCED" and outcome.same_hardware and not outcome.exact
    assert "same GPU, not deterministic: tolerance 0.01" in outcome.line()
    far = [0.2, 0.6, 1.0, 0.8 + 4 * TOLERANCE * 1.5]
    assert compare(recorded, rerun(far, **gpu), Path("r")).verdict == "DIFFERS"


def test_other_episodes_cannot_be_paired() -> None:
    again = rerun(RECORDED)
    again["protocol"]["episodes_sha"] = "b" * 64
    outcome = compare(result_doc("protonet", RECORDED), again, Path("r"))
    assert outcome.verdict == "DIFFERS" and "drew other episodes" in outcome.notes[0]


def test_the_code_and_versions_that_differ_are_noted() -> None:
    again = rerun(RECORDED, git_commit="1" * 40, torch="9.9")
    again["method"]["version"] = "2"
    notes = compare(result_doc("protonet", RECORDED), again, Path("r")).notes
    assert any(n.startswith("code: recorded at 000000000000, re-run at 111111111111") for n in notes)
    assert "method version: recorded 1, here 2" in notes and "torch: recorded 2.0, here 9.9" in notes


def test_a_run_that_needs_a_missing_checkpoint_is_not_run(tmp_path: Path) -> None:
    path = put_result(tmp_path, result_doc("protonet", RECORDED, init=init_doc(path=str(tmp_path / "gone.pt"))))
    result = CliRunner().invoke(main, ["reproduce", str(path)])
    assert result.exit_code == 1
    assert f"NOT RUN     {path}: the run started from the checkpoint {tmp_path / 'gone.pt'}" in result.output
    assert "1 of 1 result(s) not reproduced" in result.output


def test_a_missing_path_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["reproduce", str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "no such result file or folder" in result.output
    assert "Traceback" not in result.output


@pytest.mark.realdata
def test_a_real_run_reproduces_and_a_forged_copy_differs(tmp_path: Path, one_thread) -> None:
    requires_real_data("omniglot")
    spec = RunSpec(method="protonet", dataset="omniglot", episodes=EpisodeSpec(5, 1, 15, 30, seed=5), budget="6",
                   hparams=(("train_ways", "10"),), device="cpu", data_root=str(shared_root()),
                   out=str(tmp_path / "board"), progress=False)
    _, path = run(spec)
    outcome = reproduce(path, str(shared_root()), record=True)
    assert outcome.verdict == "REPRODUCED" and outcome.identical, outcome.line()
    doc = read_result(path)  # the record was appended and the file still validates
    assert [r["verdict"] for r in doc["reproduced"]] == ["REPRODUCED"] and validate(doc) == []

    # a consistent forgery: two episodes raised, mean and interval recomputed; every check of the file passes
    forged = copy.deepcopy(doc)
    per = forged["accuracy"]["per_episode"]
    for i in (0, 1):
        per[i] = min(1.0, per[i] + 0.2)
    forged["accuracy"]["mean"], forged["accuracy"]["ci95"] = mean_ci95(per)
    forged["accuracy"]["by_step"][-1].update(mean=forged["accuracy"]["mean"], ci95=forged["accuracy"]["ci95"])
    forged["reproduced"] = []
    fake = tmp_path / "forged" / path.name
    fake.parent.mkdir()
    fake.write_text(json.dumps(forged))
    assert check([fake], str(shared_root()), echo=lambda _: None) == 0
    result = CliRunner().invoke(main, ["reproduce", "--data-root", str(shared_root()), str(fake)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"DIFFERS  {fake}: 2/30 episodes differ")
