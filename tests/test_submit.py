"""``mtbench submit``: the example outside method end to end on generated data, and every refusal of the
conformance check, each with a one-line message and nothing written."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from mtbench.board.submit import conformance, load_into, parse
from mtbench.cli import main
from mtbench.report.build import report
from mtbench.run.sandbox import Limits, MethodError, Sandbox

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cosine_protonet.py"


def submit(*args: str):
    return CliRunner().invoke(main, ["submit", *args])


def test_example_is_submitted_validated_and_reported(tmp_path, one_thread):
    lb = tmp_path / "leaderboards"
    result = submit(str(EXAMPLE), "--dataset", "synthetic", "--budget", "5", "--episodes", "20",
                    "--leaderboards", str(lb), "--no-progress")
    assert result.exit_code == 0, result.output
    [path] = (lb / "synthetic" / "5w1s").glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["submission"] == {"source": str(EXAMPLE), "class": "CosinePrototypes",
                                 "source_sha256": hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()}
    assert doc["method"]["name"] == "cosine-protonet" and doc["budget"]["iterations"] == 5
    assert f"ok   {path}" in result.output  # validated as it was written
    assert f"submission  {EXAMPLE}:CosinePrototypes, sha256 {doc['submission']['source_sha256']}" in result.output
    assert CliRunner().invoke(main, ["validate", str(lb)]).exit_code == 0
    report(lb, tmp_path / "reports")
    page = (tmp_path / "reports" / "synthetic-5w1s.html").read_text()
    assert f'<tr data-file="{path.name}"><td>1</td><td>cosine-protonet [submission]</td>' in page
    # accepting it: a re-run in the sandbox gives the same numbers, and the file records who re-ran it
    again = CliRunner().invoke(main, ["reproduce", "--record", str(path)])
    assert again.exit_code == 0 and again.output.startswith(f"REPRODUCED  {path}: identical"), again.output
    assert [r["verdict"] for r in json.loads(path.read_text())["reproduced"]] == ["REPRODUCED"]


BASE = '''
from dataclasses import dataclass
from mtbench.methods import Method
import torch

@dataclass(frozen=True)
class NoHparams:
    pass

class Bad(Method):
    name = "{name}"
    Hparams = NoHparams
    budgets = {{"default": {{"quick": 0, "paper": 0}}}}

    def adapt(self, support_x, support_y, ways):
        {body}
'''


REFUSALS = [
    ("bad-shape", "yield lambda q: torch.zeros(q.shape[0], ways + 1)", "returned shape [15, 6]; expected [15, 5]"),
    ("bad-nan", "yield lambda q: torch.full((q.shape[0], ways), float('nan'))", "returned NaN or infinite values"),
    ("bad-type", "yield lambda q: [0] * q.shape[0]", "returned list; it must return floating-point logits"),
    ("bad-mutate", "support_x.zero_()\n        yield lambda q: torch.zeros(q.shape[0], ways)",
     "modified the support tensors"),
    ("bad-random", "yield lambda q: torch.rand(q.shape[0], ways)", "is not deterministic"),
    ("bad-none", "return iter(())", "yielded no predictor"),
    ("bad-raise", "raise ValueError('boom')\n        yield", "raised ValueError: boom in adapt (episode 0 of the"),
    ("protonet", "yield lambda q: torch.zeros(q.shape[0], ways)", "name 'protonet' is taken by the built-in method"),
]


@pytest.fixture(scope="module")
def box():
    """One sandboxed child for the files below (a submission gets a child of its own; here many files share
    one, to start torch once)."""
    with Sandbox(Limits(cpu_seconds=600, memory_bytes=None, threads=1)) as sandbox, sandbox.stage("tests", 300):
        yield sandbox


@pytest.mark.parametrize(("name", "body", "mentions"), REFUSALS)
def test_the_conformance_check_refuses_a_nonconforming_method(tmp_path, box, name, body, mentions):
    source = tmp_path / f"{name.replace('-', '_')}.py"
    source.write_text(textwrap.dedent(BASE.format(name=name, body=body)))
    problems = conformance(load_into(box, parse(str(source))), 5, 1, {})
    assert len(problems) == 1 and mentions in problems[0], problems


def test_a_refusal_is_one_line_and_writes_nothing(tmp_path):
    name, body, mentions = REFUSALS[1]
    source = tmp_path / "bad.py"
    source.write_text(textwrap.dedent(BASE.format(name=name, body=body)))
    lb = tmp_path / "leaderboards"
    result = CliRunner().invoke(main, ["submit", str(source), "--dataset", "synthetic", "--leaderboards", str(lb),
                                       "--no-progress"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("mtbench: error:")]
    assert len(errors) == 1 and "is refused, nothing was written" in errors[0] and mentions in errors[0], result.output
    assert "Traceback" not in result.output and not lb.exists()


@pytest.mark.parametrize(("content", "ref", "mentions"), [
    ("x = 1\n", "", "defines 0 Method subclasses (none); name one as"),
    ("raise ImportError('missing dep')\n", "", "importing"),
    ("from mtbench.methods import Method\nclass A(Method):\n    name = 'a-1'\n", ":B", "defines no Method subclass 'B'"),
    ("from mtbench.methods import Method\nclass A(Method):\n    name = 'a-2'\n", "", "A has no Hparams dataclass"),
])
def test_a_file_without_one_method_is_a_one_line_error(tmp_path, box, content, ref, mentions):
    source = tmp_path / "mine.py"
    source.write_text(content)
    try:
        problems = conformance(load_into(box, parse(f"{source}{ref}")), 5, 1, {})
    except MethodError as exc:
        problems = [str(exc)]
    assert len(problems) == 1 and mentions in problems[0], problems
    result = CliRunner().invoke(main, ["submit", str(tmp_path / "nope.py"), "--dataset", "synthetic"])
    assert result.exit_code == 2 and "is not a Python file" in result.output


def test_a_fit_leaving_nan_parameters_is_refused(tmp_path, box):
    source = tmp_path / "nan_fit.py"
    source.write_text(textwrap.dedent(BASE.format(name="nan-fit", body="yield lambda q: torch.zeros(q.shape[0], ways)"))
                      + "    def __init__(self, *args):\n        super().__init__(*args)\n"
                        "        self.head = torch.nn.Linear(2, 2)\n\n"
                        "    def fit(self, ctx):\n        self.head.weight.data[0, 0] = float('inf')\n")
    problems = conformance(load_into(box, parse(str(source))), 5, 1, {})
    assert problems == ["after fit, nan-fit's parameter head.weight holds NaN or infinite values"]
