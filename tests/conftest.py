"""Shared fixtures: one torch thread for tiny runs, a local HTTP server for download tests, the official
dataset counts scaled down to the generated copies of tests/data_copies.py.

Also the xdist set-up (pyproject's addopts run ``-n auto --dist loadfile``): one torch thread per worker,
the slow files scheduled first, and no workers for ``--benchmark-only`` (pytest-benchmark turns itself off
under xdist).
"""

from __future__ import annotations

import http.server
import os
import threading

import pytest
import torch


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``pytest tests/benchmarks --benchmark-only`` runs in one process: benchmarks measure nothing under xdist."""
    if getattr(config.option, "benchmark_only", False) and hasattr(config.option, "numprocesses"):
        config.option.numprocesses = 0


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, each worker gets one intra-op thread: N workers x N threads would oversubscribe the
    cores (and the CLI subprocesses of tests/support.py's ``cli_run`` inherit OMP_NUM_THREADS=1)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# The longest files, longest first (seconds of one worker in CI, 2026-12-01: the real-data fits 650, 330, 330,
# 140; then ~190, 70, 50, 45, 40, 35): under ``--dist loadfile`` the longest go first, and the short files fill in
# around them, so that no worker is left with a long file at the end while the other idles
LONGEST = ("test_real_dann_runs.py", "test_real_xray_runs.py", "test_real_omniglot_runs.py",
           "test_real_transfer_runs.py", "test_methods.py", "test_sweep_ray.py", "test_resume.py", "test_bench.py",
           "test_precision.py", "test_sandbox.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding slow tests first, the :data:`LONGEST` in their order, then the rest (a stable sort), so
    that under ``--dist loadfile`` the long fits start at once on their own workers and the many short files
    fill the other workers around them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.path not in slow_files, LONGEST.index(name) if name in LONGEST else len(LONGEST)

    items.sort(key=rank)


@pytest.fixture(scope="module")
def one_thread():
    """Run tiny end-to-end runs on one intra-op thread (restored afterwards).

    The models in these runs are so small that a second thread only adds synchronisation, and on a
    busy 2-core machine the spinning OpenMP threads made each conv ~40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def server(tmp_path):
    """Serve files from a folder; ``/truncated/<name>`` promises more bytes than it sends."""
    served = tmp_path / "served"
    served.mkdir()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            name = self.path.lstrip("/")
            truncated = name.startswith("truncated/")
            if truncated:
                name = name[len("truncated/"):]
            path = served / name
            if "/" in name or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(body) + 1000 if truncated else len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncated else body)
            self.wfile.flush()
            self.close_connection = True

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_official(monkeypatch: pytest.MonkeyPatch) -> None:
    """The official counts scaled down to the generated copies (so that those pass as complete)."""
    # imported here, not at the top: every session loads this file, and data_copies imports the whole CLI
    from data_copies import FAKE_OMNIGLOT_COUNTS, FAKE_SUBTYPES, FAKE_XRAY_COUNTS
    from mtbench.data import omniglot as om
    from mtbench.data import xray as xr

    monkeypatch.setattr(om, "OFFICIAL_COUNTS", FAKE_OMNIGLOT_COUNTS)
    monkeypatch.setattr(xr, "OFFICIAL_COUNTS", FAKE_XRAY_COUNTS)
    monkeypatch.setattr(xr, "OFFICIAL_SUBTYPES", FAKE_SUBTYPES)
