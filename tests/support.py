"""Shared test helpers: where the real datasets are, and a local HTTP server fixture."""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def shared_root() -> Path:
    """The real datasets: ``$MTBENCH_DATA``, else ``../shared/datasets`` beside the checkout."""
    return Path(os.environ.get("MTBENCH_DATA") or HERE.parent.parent / "shared" / "datasets").resolve()


def requires_real_data(name: str) -> Path:
    """Skip the calling test unless the real dataset ``name`` is under :func:`shared_root`."""
    folder = shared_root() / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {name} not found under {shared_root()} (set MTBENCH_DATA)")
    return folder


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
