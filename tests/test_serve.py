"""`workbench serve`: a real server on a free port answers predictions and refuses bad input with 4xx."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from image_samples import coloured

from workbench.serve import make_server

ROOT = Path(__file__).resolve().parents[1]


def call(url: str, body=None, method=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class Running:
    """The server in a thread on a free port, stopped on exit."""

    def __init__(self, export_dir: Path, **options) -> None:
        self.server, sock = make_server(export_dir, host="127.0.0.1", port=0, **options)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_classification_server_answers_and_refuses_bad_input(text_export):
    with Running(text_export, max_inputs=4, max_bytes=4096) as url:
        status, health = call(url + "/health")
        assert status == 200 and health["status"] == "ok" and health["task"] == "text-classification"
        assert health["labels"] == ["neg", "pos"] and health["backend"] == "onnx"

        status, out = call(url + "/predict", {"inputs": ["good great film", "awful dismal plot"]})
        assert status == 200 and len(out["predictions"]) == 2
        for p in out["predictions"]:
            assert p["label"] in ("neg", "pos") and 0.5 <= p["score"] <= 1
            assert p["score"] == max(p["probabilities"].values())

        assert call(url + "/predict", raw=b"{not json")[0] == 400
        status, out = call(url + "/predict", {"texts": ["x"]})
        assert status == 400 and '"inputs"' in out["error"]
        status, out = call(url + "/predict", {"inputs": "one text"})
        assert status == 400
        status, out = call(url + "/predict", {"inputs": []})
        assert status == 422 and "empty" in out["error"]
        status, out = call(url + "/predict", {"inputs": ["fine", 3]})
        assert status == 422 and out["error"].startswith("inputs[1]: expected a text")
        status, out = call(url + "/predict", {"inputs": ["a"] * 5})
        assert status == 413 and "at most 4" in out["error"]
        status, out = call(url + "/predict", {"inputs": ["a" * 5000]})
        assert status == 413 and "4,096" in out["error"]
        assert call(url + "/nowhere")[0] == 404
        status, out = call(url + "/predict", method="GET")
        assert status == 405 and "error" in out
        assert call(url + "/health")[0] == 200  # still up after all that


def test_tagging_and_image_servers(tagging_export, image_export):
    with Running(tagging_export) as url:
        status, out = call(url + "/predict", {"inputs": ["john lives in paris", ["mary", "works", "for", "acme"]]})
        assert status == 200
        first, second = out["predictions"]
        assert first["tokens"] == ["john", "lives", "in", "paris"] and len(first["tags"]) == 4
        assert len(second["tags"]) == 4 and len(second["scores"]) == 4
        assert call(url + "/predict", {"inputs": [["ok", ""]]})[0] == 422
    buf = io.BytesIO()
    coloured((200, 30, 30), (40, 30), seed=3).save(buf, "PNG")
    good = base64.b64encode(buf.getvalue()).decode()
    with Running(image_export) as url:
        status, out = call(url + "/predict", {"inputs": [good]})
        assert status == 200 and out["predictions"][0]["label"] in ("red", "blue")
        status, out = call(url + "/predict", {"inputs": [good, base64.b64encode(b"not an image").decode()]})
        assert status == 422 and out["error"].startswith("inputs[1]: ")
        status, out = call(url + "/predict", {"inputs": ["@@@"]})
        assert status == 422 and "base64" in out["error"]


def test_cli_serve_refuses_a_bad_export_and_a_taken_port(text_export, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "workbench", "serve", str(tmp_path)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2 and "is not a Workbench export" in p.stderr and "Traceback" not in p.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "workbench", "serve", str(text_export), "--port", str(port)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in p.stderr


@pytest.mark.slow
def test_cli_serve_in_a_subprocess_answers_curl_like_requests(text_export):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", str(text_export), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, health = call(f"http://127.0.0.1:{port}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
                time.sleep(0.2)
        assert status == 200
        status, out = call(f"http://127.0.0.1:{port}/predict", {"inputs": ["good film"]})
        assert status == 200 and out["predictions"][0]["label"] in ("neg", "pos")
    finally:
        proc.terminate()
        proc.wait(30)
