"""Hostile submissions against ``mtbench submit``'s sandbox, run for real (bubblewrap where it works here),
and the output checks of ``mtbench run --method file.py:Class``.

Each hostile file is refused or contained: one line, exit 2 for a refusal, no traceback, no result, nothing
outside the sandbox's scratch folder changed. Tests of what only bubblewrap provides (a read-only machine,
no network) are skipped, with the reason, where bubblewrap cannot start a sandbox; the fallback (a child
process with limits only) is tested everywhere.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from mtbench.cli import main
from mtbench.run.sandbox import bwrap_status

BWRAP, BWRAP_DETAIL = bwrap_status(os.environ.get("MTBENCH_BWRAP", "bwrap"))
needs_bwrap = pytest.mark.skipif(BWRAP is None, reason=f"bubblewrap unusable here: {BWRAP_DETAIL}")

HEAD = '''
import dataclasses, gc, inspect, os, socket, time
import torch
from mtbench.methods import Method

@dataclasses.dataclass(frozen=True)
class NoHparams:
    pass
'''


def method(name: str, body: str, *, fit: str = "pass", prelude: str = "", cls_body: str = "") -> str:
    """A submission whose ``adapt`` has ``body`` (``ways``, ``support_x``, ``support_y`` in scope) and whose
    ``fit`` has ``fit`` (``ctx`` in scope); ``prelude`` runs at import, ``cls_body`` in the class."""
    def block(code: str, spaces: int) -> str:
        return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * spaces)

    return "\n".join([HEAD, textwrap.dedent(prelude), "class Probe(Method):", f"    name = {name!r}",
                      "    Hparams = NoHparams", "    budgets = {'default': {'quick': 0, 'paper': 0}}",
                      block(cls_body, 4), "    def fit(self, ctx):", block(fit, 8),
                      "    def adapt(self, support_x, support_y, ways):", block(body, 8), ""])


def submit(tmp_path: Path, source: str, *args: str, env: dict[str, str] | None = None):
    """``mtbench submit`` of ``source`` on synthetic data: the result, and the leaderboard folder."""
    path = tmp_path / "probe.py"
    path.write_text(source)
    lb = tmp_path / "leaderboards"
    result = CliRunner().invoke(main, ["submit", str(path), "--dataset", "synthetic", "--leaderboards",
                                                       str(lb), "--no-progress", "--budget", "0", "--episodes", "4",
                                                       *args], env=env)
    return result, lb


def refused(result, lb: Path, mentions: str) -> str:
    """Assert a one-line refusal mentioning ``mentions``, exit 2, no traceback, nothing written; the line."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mtbench: error:")]
    assert len(errors) == 1 and "is refused, nothing was written" in errors[0], result.stderr
    assert mentions in errors[0], errors[0]
    assert "Traceback" not in result.stderr + result.stdout and not lb.exists()
    return errors[0]


@pytest.fixture
def outside():
    """A folder outside /tmp (the sandbox's /tmp is private), with one file in it: a user's data."""
    folder = Path(tempfile.mkdtemp(prefix=".mtbench-victim-", dir=Path.home()))
    (folder / "thesis.txt").write_text("years of work")
    yield folder
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


@needs_bwrap
def test_a_file_deleting_at_import_deletes_nothing_and_is_refused(tmp_path, outside):
    source = method("deleter", "yield lambda q: torch.zeros(q.shape[0], ways)",
                    prelude=f"for f in os.listdir({str(outside)!r}):\n    os.remove(os.path.join({str(outside)!r}, f))\n")
    result, lb = submit(tmp_path, source)
    refused(result, lb, "failed: OSError: [Errno 30] Read-only file system")
    assert (outside / "thesis.txt").read_text() == "years of work"
    assert "sandbox: bubblewrap" in result.stderr


@needs_bwrap
def test_writes_outside_the_scratch_folder_fail_and_private_ones_vanish(tmp_path, outside):
    home_file, tmp_file = outside / f"pwned-{uuid.uuid4().hex}", Path(f"/tmp/x-{uuid.uuid4().hex}")
    # ~ is the scratch folder and /tmp is private: both writes succeed there; the real folder is read-only
    prelude = (f"open(os.path.expanduser('~/pwned'), 'w').write('x')\nopen({str(tmp_file)!r}, 'w').write('x')\n"
               f"open({str(home_file)!r}, 'w').write('x')\n")
    result, lb = submit(tmp_path, method("writer", "yield lambda q: torch.zeros(q.shape[0], ways)", prelude=prelude))
    refused(result, lb, "Read-only file system")
    assert not home_file.exists() and not tmp_file.exists() and not (Path.home() / "pwned").exists()


def test_a_method_sleeping_in_adapt_is_stopped_at_the_stage_limit(tmp_path):
    result, lb = submit(tmp_path, method("sleeper", "time.sleep(3600)\nyield lambda q: torch.zeros(q.shape[0], ways)"),
                        "--timeout", "5")
    refused(result, lb, "the conformance check stage ran past its time limit of 5 s (--timeout)")


SPY = method("spy", '''
    def predict(query_x):
        # the evaluator's frames, then every live object: anything holding this episode's query labels
        for info in inspect.stack():
            for value in info.frame.f_locals.values():
                y = getattr(value, "query_y", None)
                if isinstance(y, torch.Tensor) and y.shape[0] == query_x.shape[0]:
                    return torch.nn.functional.one_hot(y.cpu(), ways).float()
        for obj in gc.get_objects():
            if (type(obj) is torch.Tensor and obj.dtype == torch.int64 and obj.shape == (query_x.shape[0],)
                    and obj is not support_y and int(obj.max()) < ways):
                return torch.nn.functional.one_hot(obj.cpu(), ways).float()
        return torch.zeros(query_x.shape[0], ways)
    yield predict
''')


def test_a_method_looking_for_the_query_labels_finds_none_in_the_sandbox(tmp_path):
    # in process (mtbench run --method file.py:Class) the same file reads the labels off the evaluator's frame
    spy = tmp_path / "spy.py"
    spy.write_text(SPY.replace("name = 'spy'", "name = 'spy-in-process'"))  # registered by the run
    ran = CliRunner().invoke(main, ["run", "--method", f"{spy}:Probe", "--dataset", "synthetic", "--budget", "0",
                                    "--episodes", "4", "--out", str(tmp_path / "res"), "--no-progress"])
    assert ran.exit_code == 0 and "accuracy    1.0000" in ran.output, ran.output
    result, lb = submit(tmp_path, SPY)
    assert result.exit_code == 0, result.stderr
    [path] = (lb / "synthetic" / "5w1s").glob("*.json")
    doc = json.loads(path.read_text())
    assert doc["accuracy"]["per_episode"] == pytest.approx([0.2] * 4)  # all-zero logits: class 0 for every query, chance
    assert any("sandboxed child process" in note for note in doc["fit"]["notes"])
    assert CliRunner().invoke(main, ["validate", str(lb)]).exit_code == 0


def test_nan_after_a_few_fit_iterations_is_caught_on_the_episode_it_reaches(tmp_path):
    # NaN only once fit has run 3 iterations (the conformance check fits 2), from episode 2 on
    source = method("late-nan", '''
        self.calls += 1
        bad = self.iterations >= 3 and self.calls >= 3
        yield lambda q: torch.full((q.shape[0], ways), float("nan") if bad else 0.0)
    ''', fit="for _ in ctx.loop('fit'):\n    self.iterations += 1\nself.calls = 0",
                    cls_body="iterations = 0\ncalls = 0\n")
    result, lb = submit(tmp_path, source, "--budget", "4")
    refused(result, lb, "late-nan returned NaN or infinite logits on episode 2, adaptation step 0")


@needs_bwrap
def test_the_network_is_unreachable(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    accepted: list[object] = []

    def serve() -> None:
        try:
            accepted.append(server.accept())
        except OSError:  # the socket closed at the end of the test (or timed out): nobody connected
            pass

    threading.Thread(target=serve, daemon=True).start()
    port = server.getsockname()[1]
    source = method("caller", "yield lambda q: torch.zeros(q.shape[0], ways)",
                    fit=f"socket.create_connection(('127.0.0.1', {port}), timeout=5).sendall(b'labels?')")
    result, lb = submit(tmp_path, source)
    refused(result, lb, "caller raised ConnectionRefusedError")
    server.close()
    assert not accepted


def test_without_bubblewrap_the_child_runs_with_limits_only_and_says_so(tmp_path):
    source = method("plain", "yield lambda q: torch.zeros(q.shape[0], ways)")
    result, lb = submit(tmp_path, source, env={"MTBENCH_BWRAP": ""})
    assert result.exit_code == 0, result.stderr
    assert "sandbox: NOT CONTAINED (bubblewrap turned off ($MTBENCH_BWRAP is empty))" in result.stderr
    [path] = (lb / "synthetic" / "5w1s").glob("*.json")
    assert "no bubblewrap: NOT contained" in json.loads(path.read_text())["fit"]["notes"][0]


@pytest.mark.parametrize(("name", "body", "mentions"), [
    ("wide", "yield lambda q: torch.zeros(q.shape[0], ways + 1)",
     "wide returned logits of shape [75, 6] on episode 0, adaptation step 0; expected [75, 5]"),
    ("later-nan", ("self.calls += 1\nv = float('nan') if self.calls > 3 else 0.0\n"
                   "yield lambda q: torch.zeros(q.shape[0], ways)\nyield lambda q: torch.full((q.shape[0], ways), v)"),
     "later-nan returned NaN or infinite logits on episode 3, adaptation step 1"),
])
def test_run_checks_every_output_of_a_method_from_a_file(tmp_path, name, body, mentions):
    path = tmp_path / "mine.py"
    path.write_text(method(name, body, cls_body="calls = 0\n"))
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["run", "--method", f"{path}:Probe", "--dataset", "synthetic",
                                                       "--budget", "0", "--episodes", "5", "--out", str(out),
                                                       "--no-progress"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("mtbench: error:")]
    assert result.exit_code == 2 and len(errors) == 1 and mentions in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
