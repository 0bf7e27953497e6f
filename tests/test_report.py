"""``mtbench report``: the throughput page from bench files in the layout ``mtbench bench`` writes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mtbench.bench import workloads as bench
from mtbench.bench import record as benchcmd
from mtbench.cli import main
from mtbench.report import report
from mtbench.report.blocks import md_text, slugs, svg
from mtbench.results import provenance
from mtbench.core.runtime import malloc_setting

CPU = "CPU Test Processor (2 threads)"
GPU = "CUDA Test GPU 80GB"
HOSTILE = "<script>alert(1)</script>"


def bench_doc(device: str, timestamp: str, speed: float = 1.0, method: str = "protonet") -> dict:
    """A bench document made by the functions ``mtbench bench`` uses, from made-up step times: the rows of
    :meth:`bench.Measurement.as_dict`, the document of :func:`benchcmd.document`; ``speed`` scales the rates."""
    spec = benchcmd.BenchSpec(device="cpu", meta_batches=(1, 8), repeats=1, episodes=2)
    kind = "cuda_max_allocated" if device.startswith("CUDA") else "cpu_peak_rss"
    steps = [("episodes", "sample", None, 1, 80, 0.001), ("episodes", "fixed set", None, 2, 160, 0.004),
             (method, "train", None, 1, 80, 0.05), (method, "evaluate", None, 2, 160, 0.3),
             (method, "forward", None, 2, 160, 0.2)]
    for b in spec.meta_batches:
        steps += [("maml-vmap", "meta-step", b, b, 80 * b, 0.1 * b ** 0.5), ("maml-loop", "meta-step", b, b, 80 * b, 0.1 * b)]
    rows = [bench.Measurement(m, what, b, tasks, images, (seconds / speed,), 2**30, kind, "cpu", {}).as_dict()
            for m, what, b, tasks, images, seconds in steps]
    origin = provenance(device, "cpu", malloc_setting(), "mtbench bench --out x.json")
    origin["timestamp"] = timestamp
    doc = benchcmd.document(spec, "synthetic 1x28x28 images", False, rows, torch.device("cpu"), origin)
    doc["machine"]["device_name"] = device  # machine_info describes the machine the test runs on
    return doc


def put(leaderboards: Path, name: str, doc: dict | str) -> Path:
    path = leaderboards / "throughput" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=1))
    return path


@pytest.fixture
def leaderboards(tmp_path) -> Path:
    lb = tmp_path / "leaderboards"
    put(lb, "cpu-test_20260101T000000Z.json", bench_doc(CPU, "2026-01-01T00:00:00+00:00", speed=0.5))
    put(lb, "cpu-test_20260102T000000Z.json", bench_doc(CPU, "2026-01-02T00:00:00+00:00"))
    put(lb, "cuda-test_20260101T000000Z.json", bench_doc(GPU, "2026-01-01T00:00:00+00:00", speed=20.0))
    (lb / "omniglot" / "5w1s").mkdir(parents=True)  # result files live beside throughput/: other pages
    (lb / "omniglot" / "notes.txt").write_text("not a result")
    return lb


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def invoke(*args: str):
    return CliRunner().invoke(main, ["report", *args])


def test_report_writes_pages_and_figures(leaderboards, tmp_path):
    out = tmp_path / "reports"
    written = report(leaderboards, out)
    slug = slugs([CPU, GPU])
    expected = {"index.md", "index.html", "throughput.md", "throughput.html", "figures/throughput-tasks.svg",
                f"figures/throughput-maml-{slug[CPU]}.svg", f"figures/throughput-maml-{slug[GPU]}.svg"}
    assert set(files(out)) == expected and sorted(written) == sorted(out / f for f in expected)
    for name in [n for n in expected if n.endswith(".svg")]:
        text = (out / name).read_text()
        assert text.startswith("<?xml") and "<svg" in text and "dc:date" not in text

    md, page = (out / "throughput.md").read_text(), (out / "throughput.html").read_text()
    for text in (md, page):
        for column in ("method", "measurement", "meta-batch", "device", "tasks/s", "images/s", "ms/step", "peak memory"):
            assert column in text
        assert CPU in text and GPU in text and "1024 MiB (CUDA)" in text and "1024 MiB (process RSS)" in text
        assert "MAML: batched meta-batches against the per-task reference loop" in text
        assert "ProtoNet: evaluator overhead" in text
        assert "1.50x" in text  # evaluator / forward: 0.3 s / 0.2 s
        assert f"{8 ** 0.5:.2f}x" in text  # vmap / loop at meta-batch 8: (8 / 0.1√8) / (8 / 0.8)
        assert "torch" in text and benchcmd.commit_text(bench.machine_info())[:12] in text
        assert "synthetic 1x28x28 images" in text and ("glibc defaults" in text or "tuned in process" in text)
        assert "no (a later run on this device is)" in text
    # the latest run on each device is shown; the older CPU run is listed under Runs only
    older = "cpu-test_20260101T000000Z.json"
    assert md.count(md_text(older)) == 1 and page.count(older) == 1
    assert "not-a-bench-file" not in md
    # the CPU's latest run (speed 1) is shown: protonet train at 1 / 0.05 s = 20 tasks/s, not the older 10
    assert re.search(r"\| protonet \| train \| - \| CPU Test Processor \(2 threads\) \| 20\.0 \|", md)

    # every image the pages show is there; the HTML needs nothing from outside the folder
    for src in re.findall(r"\]\(([^)]+\.svg)\)", md) + re.findall(r'<img src="([^"]+)"', page):
        assert (out / src).is_file(), src
    assert "<style>" in page and not re.search(r"<script|<link|https?://", page)
    index_md, index_html = (out / "index.md").read_text(), (out / "index.html").read_text()
    assert "[Throughput](throughput.md)" in index_md and '<a href="throughput.html">Throughput</a>' in index_html
    assert "2 devices, 3 bench files" in index_md


def test_second_run_is_byte_identical_and_depends_on_the_files_alone(leaderboards, tmp_path):
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    report(leaderboards, first)
    before = files(first)
    report(leaderboards, first)
    assert files(first) == before
    moved = shutil.copytree(leaderboards, tmp_path / "elsewhere" / "lb")
    report(leaderboards, second, progress=True)  # the bar goes to stderr, never into a page
    report(moved, third)
    assert files(second) == files(third) == before


def test_a_figure_is_the_same_bytes_when_its_coordinates_differ_in_their_last_bits() -> None:
    """Another CPU computes a log axis's positions a few ulps apart: the SVG must not change with them (at 6 decimals,
    a point shifted by ~1e-7 pt is written differently; at 0.001 pt it is not)."""
    def figure(shift: float) -> bytes:
        return svg(lambda fig: fig.subplots().plot([0.0, 0.123456789 + shift, 1.0], [0.0, 0.5, 1.0]), (4.0, 3.0))

    same, moved = figure(0.0), figure(1e-9)
    assert same == moved
    assert not re.search(rb"\d\.\d{4,}", same)


def test_the_cli_shows_a_progress_bar_over_the_pages_when_asked_or_on_a_terminal(leaderboards, tmp_path):
    def run(out: str, *flags: str):
        return CliRunner().invoke(main, ["report", "--leaderboards", str(leaderboards), "--out", str(tmp_path / out),
                                         *flags])

    shown, quiet, default = run("a", "--progress"), run("b", "--no-progress"), run("c")
    assert shown.exit_code == quiet.exit_code == default.exit_code == 0, shown.output
    assert "report:   0%" in shown.stderr and "page/s" in shown.stderr and shown.stderr.endswith("\r")  # cleared
    assert quiet.stderr == default.stderr == ""  # the test's stderr is not a terminal
    assert files(tmp_path / "a") == files(tmp_path / "b") == files(tmp_path / "c")


def test_strings_from_files_are_escaped_in_markdown_and_html(tmp_path):
    lb = tmp_path / "lb"
    device = "<img src=x onerror=alert(2)> | *bold* _x_ $\\frac{1}{2}$ [link](http://e.x)"
    put(lb, "hostile.json", bench_doc(device, "2026-01-01T00:00:00+00:00", method=HOSTILE))
    out = tmp_path / "reports"
    report(lb, out)
    md, page = (out / "throughput.md").read_text(), (out / "throughput.html").read_text()
    for text in (md, page, (out / "index.html").read_text(), (out / "index.md").read_text()):
        assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in md and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert r"\*bold\* \_x\_ \$\\frac{1}{2}\$ \[link\](http://e.x)" in md
    # the | in the device name does not add a column: every row of a table has as many cells as its header
    for table in re.findall(r"(?:^\|.*\|\n)+", md, flags=re.M):
        cells = {len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(cells) == 1, table
    svgs = [p.read_text() for p in (out / "figures").glob("*.svg")]
    assert len(svgs) == 2 and all("<script" not in s for s in svgs)  # names are drawn as paths, in comments


def test_a_run_without_measurements_makes_a_page_without_figures(tmp_path):
    lb = tmp_path / "lb"
    put(lb, "empty.json", {**bench_doc(CPU, "2026-01-01T00:00:00+00:00"), "measurements": [],
                           "ratios": {"maml_batched_over_loop": {}}})
    report(lb, tmp_path / "reports")
    md = (tmp_path / "reports" / "throughput.md").read_text()
    assert "No measurements." in md and "No MAML measurements." in md and "No ProtoNet evaluator" in md
    assert "empty.json" in md and not (tmp_path / "reports" / "figures").exists()


def test_cli_writes_the_report_and_keeps_other_files(leaderboards, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "README.md").write_text("kept\n")
    (out / "figures").mkdir()
    (out / "figures" / "throughput-maml-old-device.svg").write_text("<svg/>")  # from an earlier report
    result = invoke("--leaderboards", str(leaderboards), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out / 'index.html'}") and "3 figure(s)" in result.output
    assert (out / "README.md").read_text() == "kept\n" and (out / "throughput.html").is_file()
    assert not (out / "figures" / "throughput-maml-old-device.svg").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_defaults_are_leaderboards_and_reports(leaderboards, monkeypatch):
    monkeypatch.chdir(leaderboards.parent)
    result = invoke()
    assert result.exit_code == 0, result.output
    assert (leaderboards.parent / "reports" / "index.md").is_file()


def one_line_error(result, *mentions: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtbench: error:"), result.output
    for text in mentions:
        assert text in lines[0], lines[0]


def test_missing_or_empty_leaderboards_are_one_line_errors(tmp_path):
    one_line_error(invoke("--leaderboards", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")),
                   "no leaderboard folder", str(tmp_path / "nowhere"))
    (tmp_path / "lb" / "throughput").mkdir(parents=True)
    one_line_error(invoke("--leaderboards", str(tmp_path / "lb"), "--out", str(tmp_path / "r")),
                   "nothing to report", "mtbench bench --out", str(tmp_path / "lb" / "throughput"))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("content", "mentions"), [
    ("{not json", ["cannot read bench file"]),
    ("[]", ["bench file: expected an object"]),
    (json.dumps({"schema_version": 1}), ["kind: missing", "measurements: missing"]),
    ("measurement without a rate", ["measurements[2].tasks_per_s: missing"]),
    ("a result of mtbench run", ["kind 'mtbench-run'"]),
])
def test_a_malformed_file_is_named_and_the_old_report_stays(leaderboards, tmp_path, content, mentions):
    out = tmp_path / "reports"
    report(leaderboards, out)
    before = files(out)
    if content == "measurement without a rate":
        doc = bench_doc(CPU, "2026-01-03T00:00:00+00:00")
        del doc["measurements"][2]["tasks_per_s"]
        content = json.dumps(doc)
    elif content == "a result of mtbench run":
        content = json.dumps({**bench_doc(CPU, "2026-01-03T00:00:00+00:00"), "kind": "mtbench-run"})
    bad = put(leaderboards, "zz-bad.json", content)
    one_line_error(invoke("--leaderboards", str(leaderboards), "--out", str(out)), str(bad), *mentions)
    assert files(out) == before


def test_out_that_is_a_file_is_an_error(leaderboards, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(invoke("--leaderboards", str(leaderboards), "--out", str(tmp_path / "file")), "is a file")


def test_markdown_text_and_slugs():
    assert md_text("a  b\nc") == "a b c"
    assert md_text("<b>&amp;</b> `x` *y* _z_ [a](b) #1 ~s~ a|b $m$ \\") == \
        "&lt;b&gt;&amp;amp;&lt;/b&gt; \\`x\\` \\*y\\* \\_z\\_ \\[a\\](b) \\#1 \\~s\\~ a\\|b \\$m\\$ \\\\"
    assert slugs(["CUDA NVIDIA H100 80GB HBM3", "cuda nvidia h100 80gb hbm3", "***"]) == {
        "CUDA NVIDIA H100 80GB HBM3": "cuda-nvidia-h100-80gb-hbm3", "cuda nvidia h100 80gb hbm3":
        "cuda-nvidia-h100-80gb-hbm3-2", "***": "x"}


def test_reads_what_mtbench_bench_writes(tmp_path, one_thread):
    spec = benchcmd.BenchSpec(device="cpu", meta_batches=(1,), repeats=1, episodes=2, data_root=str(tmp_path / "none"))
    doc = benchcmd.run(spec)
    lb = tmp_path / "leaderboards"
    benchcmd.write(doc, lb / "throughput" / "cpu_20260101T000000Z.json")
    out = tmp_path / "reports"
    report(lb, out)
    md = (out / "throughput.md").read_text()
    assert md_text(doc["machine"]["device_name"]) in md and "maml-vmap" in md and "evaluator / forward" in md
    assert (out / "figures" / f"throughput-maml-{slugs([doc['machine']['device_name']])[doc['machine']['device_name']]}.svg").is_file()


def test_each_evaluation_ratio_comes_from_the_newest_file_that_measured_it(tmp_path):
    """A bench run of some methods' evaluation leaves the others' ratios to the older file that measured them."""
    lb = tmp_path / "lb"
    older, newer = bench_doc(CPU, "2026-01-01T00:00:00+00:00"), bench_doc(CPU, "2026-01-02T00:00:00+00:00")
    older["ratios"]["evaluation_over_work_bound"] = {"maml": 1.25, "dann": 1.61}
    newer["ratios"]["evaluation_over_work_bound"] = {"dann": 1.36}
    put(lb, "cpu-a_20260101T000000Z.json", older)
    put(lb, "cpu-b_20260102T000000Z.json", newer)
    report(lb, tmp_path / "reports")
    md = (tmp_path / "reports" / "throughput.md").read_text()
    assert re.search(r"\| maml evaluation / its work-bound time \| 1\.25x \|.*\| cpu-a\\_20260101T000000Z\.json \|", md)
    assert re.search(r"\| dann evaluation / its work-bound time \| 1\.36x \|.*\| cpu-b\\_20260102T000000Z\.json \|", md)
    assert "1.61x" not in md
    assert re.search(r"\| cpu-a\\_20260101T000000Z\.json \| .* \| its evaluation ratios of maml \|", md)
