"""`workbench serve`: a real server on a free port answers predictions and refuses bad input with 4xx."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from image_samples import coloured

from workbench.cli.serve import FAULT_DELAY_ENV, make_server

ROOT = Path(__file__).resolve().parents[1]


def call(url: str, body=None, method=None, raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
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


# ---- robustness: hostile or unlucky requests, stopping, ports, keys, huge texts -----------------------

def start_cli(export_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`workbench serve EXPORT_DIR --port 0 ARGS` in a subprocess: (process, base URL on 127.0.0.1)."""
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "serve", str(export_dir), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    line = proc.stdout.readline()  # "workbench: serving ... on http://HOST:PORT (...)", once listening
    m = re.search(r"on http://\S+:(\d+) ", line)
    if not m:
        proc.kill()
        pytest.fail(f"no serving line: {line!r}\n{proc.communicate()[1]}")
    return proc, f"http://127.0.0.1:{m.group(1)}"


def stop_cli(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGTERM, then (exit status, stderr)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def in_background(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except Exception as e:  # reported by the test
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_lone_surrogates_and_deep_nesting_get_a_clear_4xx_and_the_server_goes_on(text_export, tagging_export):
    with Running(text_export) as url:
        status, out = call(url + "/predict", raw=b'{"inputs": ["fine", "\\ud800 x"]}')
        assert status == 422 and out["error"].startswith("inputs[1]: ") and "surrogate" in out["error"]
        assert call(url + "/predict", {"inputs": ["good film"]})[0] == 200
        for deep in (b"[" * 100_000 + b"]" * 100_000, b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
            status, out = call(url + "/predict", raw=deep)
            assert status == 400 and "nested too deeply" in out["error"]
            status, out = call(url + "/predict", {"inputs": ["good film"]})
            assert status == 200 and out["predictions"][0]["label"] in ("neg", "pos")
    with Running(tagging_export) as url:
        status, out = call(url + "/predict", raw=b'{"inputs": [["john", "\\udc80"]]}')
        assert status == 422 and out["error"].startswith("inputs[0][1]: ") and "surrogate" in out["error"]
        assert call(url + "/predict", {"inputs": ["john lives in paris"]})[0] == 200


def test_ports_out_of_range_are_refused_with_exit_2(tmp_path, capsys):
    from workbench.cli.main import main
    from workbench.cli.serve import bind
    from workbench.core.errors import InputError

    for port in ("70000", "-1", "http"):
        assert main(["serve", str(tmp_path), "--port", port]) == 2
        err = capsys.readouterr().err
        assert "--port" in err and "not a port number" in err and "Traceback" not in err
    with pytest.raises(InputError, match="not a port number"):
        bind("127.0.0.1", 70000)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}: .*another program"):
            bind("127.0.0.1", port)


def test_sigterm_answers_the_request_in_flight_then_exits_0(text_export, tmp_path):
    marker = tmp_path / "in-flight"
    proc, url = start_cli(text_export, env={FAULT_DELAY_ENV: f"2:{marker}"})
    try:
        t, result = in_background(call, url + "/predict", {"inputs": ["good great film"]})
        wait_for(marker)  # the request is being answered (and takes 2 s more)
        code, err = stop_cli(proc)
        t.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    status, out = result["value"]
    assert status == 200 and out["predictions"][0]["label"] in ("neg", "pos")
    assert code == 0, err
    assert "Traceback" not in err and "CancelledError" not in err and "stopped (SIGTERM)" in err
    assert "reachable from other machines" not in err  # 127.0.0.1: no exposure warning


def test_a_request_that_outlives_the_stop_gets_503(text_export, tmp_path, monkeypatch):
    marker = tmp_path / "in-flight"
    monkeypatch.setenv(FAULT_DELAY_ENV, f"3:{marker}")
    running = Running(text_export, grace=0.3)
    with running as url:
        t, result = in_background(call, url + "/predict", {"inputs": ["good film"]})
        wait_for(marker)
        running.server.should_exit = True
        t.join(30)
    status, out = result["value"]
    assert status == 503 and "stopping" in out["error"]


def test_exposure_warning():
    from workbench.cli.serve import exposure_warning

    for local in ("127.0.0.1", "127.0.1.1", "::1", "::ffff:127.0.0.1"):
        assert exposure_warning(local, 8000, False) is None
    for address in ("0.0.0.0", "::", "192.168.1.20"):
        warning = exposure_warning(address, 8000, False)
        assert "reachable from other machines" in warning and "no authentication" in warning
        assert "--api-key" in warning
        warning = exposure_warning(address, 8000, True)
        assert "reachable from other machines" in warning and "need the API key" in warning


def test_the_api_key_guards_every_request_but_health(text_export):
    key = "s3cret-key_1234567890"
    with Running(text_export, api_key=key) as url:
        status, health = call(url + "/health")
        assert status == 200 and health == {"status": "ok"}  # up, but nothing about the model
        status, health = call(url + "/health", headers={"Authorization": f"Bearer {key}"})
        assert status == 200 and health["labels"] == ["neg", "pos"]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"},
                        {"Authorization": f"Bearer {key}x"}, {"Authorization": "Bearer"}):
            status, out = call(url + "/predict", {"inputs": ["good film"]}, headers=headers)
            assert status == 401 and ("API key" in out["error"] or "Bearer" in out["error"]), (headers, out)
        assert call(url + "/nowhere")[0] == 401  # paths are not revealed without the key
        status, out = call(url + "/predict", {"inputs": ["good film"]}, headers={"Authorization": f"bearer  {key}"})
        assert status == 200 and out["predictions"][0]["label"] in ("neg", "pos")


def test_cli_api_key_from_the_environment_and_the_exposure_warning(text_export, tmp_path):
    from workbench.cli.main import main

    key = "k" * 24
    assert main(["serve", str(text_export), "--api-key", "two words"]) == 2  # refused before loading
    proc, url = start_cli(text_export, "--host", "0.0.0.0", env={"WORKBENCH_API_KEY": key})
    try:
        assert call(url + "/predict", {"inputs": ["good film"]})[0] == 401
        status, out = call(url + "/predict", {"inputs": ["good film"]}, headers={"Authorization": f"Bearer {key}"})
        assert status == 200
    finally:
        code, err = stop_cli(proc)
    assert code == 0 and "Traceback" not in err
    assert "reachable from other machines" in err and "need the API key" in err and key not in err


def test_cli_warns_when_other_machines_can_reach_an_unguarded_server(text_export, monkeypatch, capsys):
    import workbench.cli.serve as serve_module

    class NoRun:
        def __init__(self, config) -> None:
            pass

        def run(self, sockets) -> None:
            sockets[0].close()

    monkeypatch.setattr(serve_module, "_server_class", lambda: NoRun)
    monkeypatch.delenv("WORKBENCH_API_KEY", raising=False)
    serve_module.serve(text_export, host="0.0.0.0", port=0)
    err = capsys.readouterr().err
    assert "reachable from other machines" in err and "no authentication" in err


def test_a_10_mb_text_is_answered_quickly_and_as_its_first_part(text_export):
    words = "good great film the plot was dull and awful "
    huge = words * (10_000_000 // len(words))
    with Running(text_export) as url:
        _, first = call(url + "/predict", {"inputs": [huge[:2000]]})
        start = time.perf_counter()
        status, out = call(url + "/predict", {"inputs": [huge]})
        took = time.perf_counter() - start
        assert status == 200 and out["predictions"][0]["label"] == first["predictions"][0]["label"]
        assert out["predictions"][0]["probabilities"] == pytest.approx(first["predictions"][0]["probabilities"],
                                                                        abs=1e-6)
        assert took < 10, f"{took:.1f} s"
        # 100 texts of 100,000 characters (10 MB): each was tokenized in full before (13 s of CPU)
        start = time.perf_counter()
        status, out = call(url + "/predict", {"inputs": [huge[:100_000]] * 100})
        took = time.perf_counter() - start
        assert status == 200 and len(out["predictions"]) == 100 and took < 10, f"{took:.1f} s"
        assert out["predictions"][-1]["probabilities"] == pytest.approx(first["predictions"][0]["probabilities"],
                                                                         abs=1e-6)


def _full_logits(p, texts, pairs=None):
    """Logits as the Predictor computed them before texts were cut: every text tokenized in full."""
    enc = p.tokenizer(texts, pairs, truncation="longest_first" if pairs else True, max_length=p.max_length,
                      padding=True, return_tensors="np")
    return p._run({k: enc[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})


def test_texts_are_cut_before_tokenizing_and_the_cut_changes_nothing(text_export, pair_export):
    import numpy as np

    from workbench.core.predict.predictor import Predictor

    p = Predictor(text_export)
    real = p.tokenizer
    seen: list[int] = []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, text, *args, **kwargs):
            seen.append(max(len(t) for t in ([text] if isinstance(text, str) else text)))
            return real(text, *args, **kwargs)

    words = "good great film the plot was dull and awful "
    texts = [
        words * 2000,  # ordinary long text
        "awful " + " " * 30_000 + words * 2000,  # a long run of spaces before the words
        "x" * 50_000 + " " + words * 500,  # a word longer than the first look
        "dull\u00a0" * 3000 + words * 100,  # no-break spaces: not a place to cut
        "\x00 " * 20_000 + words * 100,  # characters the tokenizer drops
        "\u4e00\u4e8c" * 20_000 + " " + words * 10,  # Chinese: no spaces to cut at
        "good film " + "!?" * 30_000,  # punctuation
        "good film",
    ]
    expected = np.concatenate([_full_logits(p, [t]) for t in texts])
    p.tokenizer = Spy()
    got = p.text_logits(texts)
    assert np.allclose(got, expected, atol=1e-6)
    seen.clear()
    p.text_logits([words * 250_000])  # 10 MB
    assert max(seen) <= 32 * p.max_length  # the 10 MB text was never tokenized whole
    seen.clear()
    p.text_logits(["x" * 10_000_000, "\u4e00" * 3_000_000, "good " + " " * 10_000_000])  # no places to cut
    assert max(seen) <= 2048 * p.max_length

    q = Predictor(pair_export)  # max_length 32: an odd budget of 29 tokens between the two texts
    long_a = words * 5000
    medium = "good film " * 20  # 40 tokens: not cut, longer than half the budget
    letters = "a " * 500  # 500 tokens, not cut: more than the 200-odd of long_a's first look, which must grow
    pairs = [(long_a, "good film"), ("dull plot", long_a), (long_a, medium), (medium, long_a),
             (long_a, letters), (letters, long_a), ("  " * 30_000 + long_a, medium)]
    expected = np.concatenate([_full_logits(q, [a], [b]) for a, b in pairs])
    got = q.text_logits([a for a, _ in pairs], [b for _, b in pairs])
    assert np.allclose(got, expected, atol=1e-6)


def test_hostile_and_unlucky_requests(text_export):
    """Each of these was tried against the server; the comments say what it answered before."""
    with Running(text_export, max_inputs=8) as url:
        good = {"inputs": ["good film"]}
        # a curl -d default content type, or none: read as JSON all the same (unchanged)
        assert call(url + "/predict", good, headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 200
        assert call(url + "/predict", good, headers={"Content-Type": "text/plain"})[0] == 200
        assert call(url + "/predict", raw=b"")[0] == 400  # empty body
        assert call(url + "/predict", raw=b'{"inputs": ["\xff"]}')[0] == 400  # not UTF-8
        status, out = call(url + "/predict", raw=b'["good film"]')  # a list, not an object
        assert status == 400 and '"inputs"' in out["error"]
        for inputs in (None, {"text": "good"}, 3, "good film"):  # inputs not a list
            assert call(url + "/predict", {"inputs": inputs})[0] == 400
        for i, bad in enumerate((None, True, 3.5, ["good"], {"text": "good"})):  # items that are not texts
            status, out = call(url + "/predict", {"inputs": ["fine"] * i + [bad]})
            assert status == 422 and out["error"].startswith(f"inputs[{i}]: expected a text"), out
        status, out = call(url + "/predict", raw=b'{"inputs": [1e999, NaN]}')  # huge and odd numbers
        assert status == 422 and "float" in out["error"]
        status, out = call(url + "/predict", raw=b'{"inputs": [' + b"9" * 5000 + b"]}")  # was: a message about
        assert status == 400 and "too many digits" in out["error"]  # sys.set_int_max_str_digits
        for method in ("PUT", "DELETE", "PATCH"):
            status, out = call(url + "/predict", good, method=method)
            assert status == 405 and "error" in out
        assert call(url + "/health", method="DELETE")[0] == 405
        assert call(url + "/predict", {"inputs": [""]})[0] == 200  # an empty text is a text
        # concurrent requests share the tokenizer, which counts tokens with other settings to cut long texts
        texts = [" ".join(["good", "great", "film", "dull", "awful", "plot"][: 1 + i % 6] * (1 + i)) for i in range(24)]
        alone = [call(url + "/predict", {"inputs": [t]})[1]["predictions"][0] for t in texts]
        threads = [in_background(call, url + "/predict", {"inputs": [t] * 8}) for t in texts]
        for (t, result), expected in zip(threads, alone):
            t.join(120)
            status, out = result["value"]
            assert status == 200 and len(out["predictions"]) == 8
            for got in out["predictions"]:
                assert got["label"] == expected["label"]
                assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)
        assert call(url + "/health")[0] == 200


def test_a_client_that_hangs_up_mid_body_and_a_bug_do_not_stop_the_server(text_export, capfd):
    import socket

    from workbench.core.predict.predictor import Predictor

    p = Predictor(text_export)
    with Running(text_export, predictor=p) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:  # says 1,000 bytes, sends 10, hangs up
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"inputs\":")
        time.sleep(0.5)
        assert call(url + "/predict", {"inputs": ["good film"]})[0] == 200
        real = p.predict

        def broken(inputs, *args, **kwargs):
            raise RuntimeError("an injected bug")

        p.predict = broken
        status, out = call(url + "/predict", {"inputs": ["good film"]})
        assert status == 500 and "internal error" in out["error"] and "an injected bug" in out["error"]
        p.predict = real
        assert call(url + "/predict", {"inputs": ["good film"]})[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "an injected bug" in err


def test_tagging_and_image_inputs_that_went_wrong_quietly(tagging_export, image_export):
    from workbench.cli.serve import MAX_TEXT_CHARS

    with Running(tagging_export) as url:
        status, out = call(url + "/predict", {"inputs": ["", "   "]})  # no words: no tags, no error
        assert status == 200 and out["predictions"] == [{"tokens": [], "tags": [], "scores": []}] * 2
        # a text to tag over the limit was cut, silently dropping the end of its answer: now refused
        status, out = call(url + "/predict", {"inputs": ["john lives in paris " * (MAX_TEXT_CHARS // 20 + 1)]})
        assert status == 413 and out["error"].startswith("inputs[0]: ") and "split it" in out["error"]
        status, out = call(url + "/predict", {"inputs": [["paris"] * (MAX_TEXT_CHARS // 5 + 1)]})
        assert status == 413 and out["error"].startswith("inputs[0]: ")
    buf = io.BytesIO()
    coloured((200, 30, 30), (40, 30), seed=3).save(buf, "PNG")
    wrapped = base64.encodebytes(buf.getvalue()).decode()  # a line break every 76 characters, as `base64` writes
    with Running(image_export) as url:
        status, out = call(url + "/predict", {"inputs": [wrapped, "data:image/png;base64," + wrapped.replace("\n", ""),
                                                         base64.urlsafe_b64encode(buf.getvalue()).decode()]})
        assert status == 200 and len({p["label"] for p in out["predictions"]}) == 1
        status, out = call(url + "/predict", {"inputs": ["data:image/png,notbase64"]})
        assert status == 422 and "base64" in out["error"]


def test_a_slow_upload_when_the_server_stops_gets_503_without_a_traceback(text_export, capfd):
    import socket

    running = Running(text_export, grace=0.3)
    with running as url:
        s = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                  b'{"inputs":')
        time.sleep(0.5)  # the request is in the app, waiting for the rest of its body
        running.server.should_exit = True
        s.settimeout(30)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        s.close()
    assert answer.startswith(b"HTTP/1.1 503") and b"stopping" in answer, answer
    assert "Traceback" not in capfd.readouterr().err
