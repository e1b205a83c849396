"""`workbench serve` on a text-generation export: OpenAI-compatible /v1/chat/completions and /v1/completions
(streamed and not), /v1/models, OpenAI-shaped errors, the API key, one generation at a time; first with a
stand-in predictor (fast, exact), then with the real GenerationPredictor on a tiny Llama export."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from workbench.cli.serve import create_app, make_server
from workbench.cli.serve_openai import StopCutter, cut_at_stops, is_generation_export

GENERATION_META = {"task": "text-generation", "generation": {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0}}


@dataclasses.dataclass
class Settings:  # GenerationSettings' fields
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0


class FakePredictor:
    """GenerationPredictor's interface. A "token" is a word: the answer is "echo:", the last message's
    words, "end." (cut at max_new_tokens); streamed word by word. Records how many generations overlap."""

    def __init__(self, context_length: int | None = None, delay: float = 0.0) -> None:
        self.settings = Settings(max_new_tokens=16)
        self.meta = dict(GENERATION_META)
        if context_length is not None:
            self.context_length = context_length
        self.delay = delay
        self.active = self.most_active = 0
        self.seen: list[Settings] = []
        self.closed = threading.Event()
        self.gate: threading.Event | None = None  # set by a test to hold a generation until it says so
        self.lock = threading.Lock()

    def _words(self, text: str, settings: Settings | None) -> list[str]:
        settings = settings or self.settings
        self.seen.append(settings)
        words = ["echo:", *text.split(), "end."]
        return words[:settings.max_new_tokens]

    def _enter(self) -> None:
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay)

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    def chat(self, messages, settings=None) -> str:
        self._enter()
        try:
            return " ".join(self._words(messages[-1]["content"], settings))
        finally:
            self._leave()

    def complete(self, prompt: str, settings=None) -> str:
        return self.chat([{"role": "user", "content": prompt}], settings)

    def stream_chat(self, messages, settings=None) -> Iterator[str]:
        self._enter()
        try:
            for i, word in enumerate(self._words(messages[-1]["content"], settings)):
                yield word if i == 0 else " " + word
                time.sleep(self.delay)
        finally:
            self.closed.set()
            self._leave()

    def stream_complete(self, prompt: str, settings=None) -> Iterator[str]:
        return self.stream_chat([{"role": "user", "content": prompt}], settings)

    def count_tokens(self, text) -> int:
        return len(text.split())


def generation_export(folder: Path, source: Path | None = None) -> Path:
    """An export folder: a copy of ``source`` (a tiny model) or an empty one, with workbench.json."""
    if source is not None:
        shutil.copytree(source, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workbench.json").write_text(json.dumps(GENERATION_META), encoding="utf-8")
    return folder


@pytest.fixture
def fake_export(tmp_path) -> Path:
    return generation_export(tmp_path / "my-chat-model")


def client_for(export: Path, predictor, **options):
    from starlette.testclient import TestClient

    return TestClient(create_app(export, predictor=predictor, **options), raise_server_exceptions=False)


def sse(lines) -> list:
    """The data of a server-sent event stream's events, parsed ("[DONE]" kept as the string)."""
    out = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", f"unexpected line in the stream: {line!r}"
    return out


def stream(client, path: str, body: dict, headers: dict | None = None) -> list:
    with client.stream("POST", path, json={**body, "stream": True}, headers=headers or {}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return sse(r.iter_lines())


def joined(events: list, kind: str = "chat") -> str:
    chunks = [e for e in events if isinstance(e, dict) and e["choices"]]
    if kind == "chat":
        return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    return "".join(c["choices"][0]["text"] for c in chunks)


def check_stream_shape(events: list, kind: str = "chat", usage: bool = False) -> str:
    """The stream's finish_reason, after checking OpenAI's chunk sequence."""
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1]]
    if usage:
        assert chunks[-1]["choices"] == [] and set(chunks[-1]["usage"]) == {"prompt_tokens", "completion_tokens",
                                                                              "total_tokens"}
        chunks = chunks[:-1]
    assert len({c["id"] for c in chunks}) == 1
    if kind == "chat":
        assert all(c["object"] == "chat.completion.chunk" and c["id"].startswith("chatcmpl-") for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    else:
        assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    return chunks[-1]["choices"][0]["finish_reason"]


def check_error(response, status: int, param: str | None = None, words: str = "") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error["param"] == param, error
    assert words.lower() in error["message"].lower(), error
    return error


# ---- with a stand-in predictor ------------------------------------------------------------------------

def test_chat_completion_answers_in_openais_shape_with_the_predictors_text(fake_export):
    predictor = FakePredictor()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    with client_for(fake_export, predictor) as client:
        r = client.post("/v1/chat/completions", json={"model": "whatever", "messages": messages, "temperature": 0.7,
                                                      "top_p": 0.9, "seed": 5, "max_tokens": 10})
        assert r.status_code == 200, r.text
        out = r.json()
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert isinstance(out["created"], int) and out["model"] == "my-chat-model"
    (choice,) = out["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == predictor.chat(messages) == "echo: hello there end."
    assert choice["finish_reason"] == "stop"
    assert predictor.seen[0] == Settings(max_new_tokens=10, temperature=0.7, top_p=0.9, seed=5)
    usage = out["usage"]
    assert usage["completion_tokens"] == 4 and usage["prompt_tokens"] == 4  # words of the messages (no tokenizer)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_completions_max_tokens_length_and_stop_strings(fake_export):
    predictor = FakePredictor()
    with client_for(fake_export, predictor) as client:
        out = client.post("/v1/completions", json={"prompt": "one two three"}).json()
        assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
        assert out["choices"][0]["text"] == predictor.complete("one two three") == "echo: one two three end."
        assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["prompt_tokens"] == 3

        out = client.post("/v1/completions", json={"prompt": "one two three", "max_tokens": 2}).json()
        assert out["choices"][0]["text"] == "echo: one" and out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["completion_tokens"] == 2
        out = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a b c d"}],
                                                        "max_completion_tokens": 3, "max_tokens": 50}).json()
        assert out["choices"][0]["message"]["content"] == "echo: a b"  # max_completion_tokens wins

        out = client.post("/v1/completions", json={"prompt": "one two three", "stop": [" thr", "zzz"],
                                                   "max_tokens": 4}).json()
        assert out["choices"][0]["text"] == "echo: one two" and out["choices"][0]["finish_reason"] == "stop"
        assert out["usage"]["completion_tokens"] == 3
        out = client.post("/v1/completions", json={"prompt": "one two three", "stop": "two"}).json()
        assert out["choices"][0]["text"] == "echo: one "


def test_streamed_chat_and_completions_join_to_the_same_text_and_end_with_done(fake_export):
    predictor = FakePredictor()
    body = {"messages": [{"role": "user", "content": "stream me please"}]}
    with client_for(fake_export, predictor) as client:
        whole = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
        events = stream(client, "/v1/chat/completions", body)
        assert check_stream_shape(events) == "stop"
        assert joined(events) == whole == "echo: stream me please end."
        assert len(events) == 1 + 5 + 1 + 1  # role, a delta a word, finish, [DONE]

        events = stream(client, "/v1/chat/completions", {**body, "max_tokens": 2,
                                                         "stream_options": {"include_usage": True}})
        assert check_stream_shape(events, usage=True) == "length" and joined(events) == "echo: stream"
        assert events[-2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

        whole = client.post("/v1/completions", json={"prompt": "abc def"}).json()["choices"][0]["text"]
        events = stream(client, "/v1/completions", {"prompt": "abc def"})
        assert check_stream_shape(events, kind="completion") == "stop"
        assert joined(events, "completion") == whole


def test_a_stop_string_split_across_pieces_cuts_the_stream_as_the_whole_text(fake_export):
    predictor = FakePredictor()
    body = {"messages": [{"role": "user", "content": "alpha beta gamma delta"}], "stop": ["a gam", "never"]}
    with client_for(fake_export, predictor) as client:
        whole = client.post("/v1/chat/completions", json=body).json()["choices"][0]
        events = stream(client, "/v1/chat/completions", body)
    assert whole["message"]["content"] == "echo: alpha bet" and whole["finish_reason"] == "stop"
    assert joined(events) == "echo: alpha bet" and check_stream_shape(events) == "stop"
    assert predictor.closed.is_set()  # the stream was closed at the stop string


def test_stop_cutter_holds_back_what_may_start_a_stop_string():
    cutter = StopCutter(["</s>", "##"])
    assert cutter.feed("hello <") == "hello "
    assert cutter.feed("/") == "" and cutter.feed("x") == "</x"
    assert cutter.feed(" #") == " " and cutter.feed("#tail") == "" and cutter.stopped
    assert cutter.feed("more") == ""
    assert cut_at_stops("a</s>b##", ["##", "</s>"]) == ("a", True)
    assert cut_at_stops("no stop <", ["</s>"]) == ("no stop <", False)
    text, pieces = "The answer is 42.\nQ: next", ["The ans", "wer is 4", "2.\n", "Q", ": next"]
    cutter = StopCutter(["\nQ:"])
    streamed = "".join(cutter.feed(p) for p in pieces) + (cutter.flush() if not cutter.stopped else "")
    assert streamed == cut_at_stops(text, ["\nQ:"])[0] == "The answer is 42."


def test_bad_requests_get_openai_shaped_400s(fake_export):
    user = [{"role": "user", "content": "hi"}]
    with client_for(fake_export, FakePredictor(), max_inputs=3, max_bytes=2048) as client:
        def post(body, path="/v1/chat/completions", **kw):
            return client.post(path, json=body, **kw)

        check_error(post({"model": "m"}), 400, "messages", "'messages' is required")
        check_error(post({"messages": "hi"}), 400, "messages", "non-empty list")
        check_error(post({"messages": []}), 400, "messages", "non-empty list")
        check_error(post({"messages": ["hi"]}), 400, "messages[0]", "role")
        check_error(post({"messages": [{"role": "wizard", "content": "hi"}]}), 400, "messages[0].role", "unknown role")
        check_error(post({"messages": [{"role": "tool", "content": "hi"}]}), 400, "messages[0].role", "'tool'")
        check_error(post({"messages": [{"role": "user", "content": 3}]}), 400, "messages[0].content", "string")
        check_error(post({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), 400,
                    "messages[0].content", "text parts")
        check_error(client.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": '
                                b'"\\ud800"}]}'), 400, "messages[0].content", "surrogate")
        check_error(post({"messages": user, "temperature": "hot"}), 400, "temperature", "a number")
        check_error(post({"messages": user, "temperature": 3}), 400, "temperature", "at most 2")
        check_error(client.post("/v1/chat/completions", content=b'{"messages": [{"role": "user", "content": "x"}], '
                                b'"temperature": NaN}'), 400, "temperature", "at most 2")
        check_error(post({"messages": user, "top_p": 0}), 400, "top_p", "above 0")
        check_error(post({"messages": user, "max_tokens": 0}), 400, "max_tokens", "at least 1")
        check_error(post({"messages": user, "max_tokens": 2.5}), 400, "max_tokens", "an integer")
        check_error(post({"messages": user, "seed": True}), 400, "seed", "an integer")
        check_error(post({"messages": user, "n": 2}), 400, "n", "one choice")
        check_error(post({"messages": user, "stop": 5}), 400, "stop", "string")
        check_error(post({"messages": user, "stop": list("abcde")}), 400, "stop", "at most 4")
        check_error(post({"messages": user, "stream": "yes"}), 400, "stream", "true or false")
        check_error(post({"messages": user, "logprobs": True}), 400, "logprobs", "not supported")
        check_error(post({"messages": user, "presence_penalty": 0.5}), 400, "presence_penalty", "repetition_penalty")
        check_error(post({"messages": user * 4}), 413, "messages", "at most 3")
        check_error(post({"prompt": 5}, "/v1/completions"), 400, "prompt", "a string")
        check_error(post({}, "/v1/completions"), 400, "prompt", "required")
        check_error(post([1, 2]), 400, None, "JSON object")
        check_error(client.post("/v1/chat/completions", content=b"{not json"), 400, None, "not valid JSON")
        check_error(post({"messages": [{"role": "user", "content": "x" * 3000}]}), 413, None, "2,048")
        check_error(client.get("/v1/chat/completions"), 405)
        check_error(client.get("/v1/nowhere"), 404)
        check_error(client.get("/v1/models/other"), 404, "model", "'my-chat-model'")
        r = client.post("/predict", json={"inputs": ["hi"]})
        assert r.status_code == 400 and "/v1/chat/completions" in r.json()["error"]
        assert client.post("/v1/chat/completions", json={"messages": user}).status_code == 200  # still serving


def test_models_health_and_the_api_key(fake_export):
    key = "s3cret-key_1234567890"
    user = {"messages": [{"role": "user", "content": "hi"}]}
    with client_for(fake_export, FakePredictor(), api_key=key) as client:
        assert client.get("/health").json() == {"status": "ok"}
        auth = {"Authorization": f"Bearer {key}"}
        health = client.get("/health", headers=auth).json()
        assert health["task"] == "text-generation" and health["model"] == "my-chat-model"
        assert health["generation"]["max_new_tokens"] == 16
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {key}"}):
            error = check_error(client.post("/v1/chat/completions", json=user, headers=headers), 401)
            assert error["code"] == "invalid_api_key"
            check_error(client.get("/v1/models", headers=headers), 401)
        with client.stream("POST", "/v1/chat/completions", json={**user, "stream": True}) as r:
            assert r.status_code == 401
        assert client.post("/v1/chat/completions", json=user, headers=auth).status_code == 200
        assert stream(client, "/v1/chat/completions", user, headers=auth)[-1] == "[DONE]"
        models = client.get("/v1/models", headers=auth).json()
        assert models == {"object": "list", "data": [{"id": "my-chat-model", "object": "model",
                                                       "created": models["data"][0]["created"],
                                                       "owned_by": "workbench"}]}
        assert client.get("/v1/models/my-chat-model", headers=auth).json()["id"] == "my-chat-model"


def test_a_prompt_longer_than_the_context_is_refused_and_max_tokens_fitted(fake_export):
    predictor = FakePredictor(context_length=8)
    with client_for(fake_export, predictor) as client:
        error = check_error(client.post("/v1/completions", json={"prompt": "w " * 8}), 400, "prompt", "context")
        assert error["code"] == "context_length_exceeded"
        check_error(client.post("/v1/completions", json={"prompt": "a b c", "max_tokens": 6}), 400, "max_tokens",
                    "lower max_tokens to 5")
        with client.stream("POST", "/v1/completions", json={"prompt": "w " * 9, "stream": True}) as r:
            assert r.status_code == 400 and json.loads(r.read())["error"]["code"] == "context_length_exceeded"
        out = client.post("/v1/completions", json={"prompt": "a b c d e f"}).json()  # default 16 lowered to 2
        assert out["choices"][0]["text"] == "echo: a" and out["choices"][0]["finish_reason"] == "length"


def test_a_bug_in_the_predictor_answers_500_and_the_server_goes_on(fake_export, capfd):
    predictor = FakePredictor()
    with client_for(fake_export, predictor) as client:
        predictor.chat = lambda messages, settings=None: 1 / 0  # type: ignore[method-assign]
        check_error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}),
                    500, None, "ZeroDivisionError")

        def broken(messages, settings=None):
            yield "part"
            raise RuntimeError("mid-stream")

        predictor.stream_chat = broken  # type: ignore[method-assign]
        events = stream(client, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        assert joined(events[:-1]) == "part" and "mid-stream" in events[-1]["error"]["message"]
        del predictor.chat, predictor.stream_chat  # the class's own again
        assert client.post("/v1/completions", json={"prompt": "still"}).status_code == 200
    assert "ZeroDivisionError" in capfd.readouterr().err


# ---- a real uvicorn server ----------------------------------------------------------------------------

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


def post_json(url: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_one_generation_at_a_time_while_health_answers(fake_export):
    predictor = FakePredictor(delay=0.02)
    predictor.gate = threading.Event()
    user = {"messages": [{"role": "user", "content": "one two"}]}
    with Running(fake_export, predictor=predictor) as url:
        results: list = []
        threads = [threading.Thread(target=lambda i=i: results.append(post_json(
            url + ("/v1/chat/completions" if i % 2 else "/v1/completions"),
            user if i % 2 else {"prompt": "one two"}))) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while predictor.active == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with urllib.request.urlopen(url + "/health", timeout=5) as r:  # the event loop is free meanwhile
            assert json.loads(r.read())["task"] == "text-generation"
        predictor.gate.set()
        for t in threads:
            t.join(60)
    assert [status for status, _ in results] == [200] * 4
    assert predictor.most_active == 1


def test_a_client_that_leaves_a_stream_closes_it_and_frees_the_model(fake_export):
    predictor = FakePredictor(delay=0.2)
    predictor.settings = Settings(max_new_tokens=1000)
    long = {"messages": [{"role": "user", "content": "word " * 500}], "stream": True}
    with Running(fake_export, predictor=predictor) as url:
        req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(long).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        r = urllib.request.urlopen(req, timeout=30)
        assert r.readline().startswith(b"data: ")
        r.close()  # the client leaves after the first event
        assert predictor.closed.wait(20), "the predictor's stream was not closed"
        predictor.delay = 0
        status, out = post_json(url + "/v1/completions", {"prompt": "next"}, timeout=30)
        assert status == 200 and out["choices"][0]["text"] == "echo: next end."


def test_the_cli_server_takes_a_generation_export(fake_export):
    assert is_generation_export(fake_export) and not is_generation_export(fake_export / "nowhere")
    with Running(fake_export, predictor=FakePredictor()) as url:
        status, out = post_json(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        assert status == 200 and out["choices"][0]["message"]["content"] == "echo: x end."
        status, out = post_json(url + "/predict", {"inputs": ["x"]})
        assert status == 400 and "/v1/chat/completions" in out["error"]


@pytest.mark.slow
def test_the_openai_client_library_chats_and_streams(fake_export):
    openai = pytest.importorskip("openai")
    predictor = FakePredictor()
    key = "k" * 24
    with Running(fake_export, predictor=predictor, api_key=key) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        assert [m.id for m in client.models.list()] == ["my-chat-model"]
        messages = [{"role": "user", "content": "from the client"}]
        reply = client.chat.completions.create(model="my-chat-model", messages=messages, max_tokens=10, seed=1)
        assert reply.choices[0].message.content == "echo: from the client end."
        assert reply.choices[0].finish_reason == "stop" and reply.usage.total_tokens == 3 + 5
        pieces = [c.choices[0].delta.content or "" for c in
                  client.chat.completions.create(model="x", messages=messages, stream=True) if c.choices]
        assert "".join(pieces) == reply.choices[0].message.content
        text = client.completions.create(model="x", prompt="go on", max_tokens=2)
        assert text.choices[0].text == "echo: go" and text.choices[0].finish_reason == "length"
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="x", messages=[{"role": "wizard", "content": "hi"}])
        assert "unknown role" in str(bad.value)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()


# ---- the real GenerationPredictor on a tiny Llama export ------------------------------------------------

@pytest.fixture(scope="module")
def llama_export(tiny_llama_dir, tmp_path_factory) -> Path:
    return generation_export(tmp_path_factory.mktemp("served") / "tiny-chat", source=tiny_llama_dir)


@pytest.fixture(scope="module")
def llama_predictor(llama_export):
    from workbench.core.predict.generation import GenerationPredictor

    return GenerationPredictor(llama_export, device="cpu")


def test_the_real_predictor_answers_chat_and_completions_streamed_or_not(llama_export, llama_predictor):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is the capital?"}]
    with client_for(llama_export, llama_predictor) as client:
        out = client.post("/v1/chat/completions", json={"model": "tiny-chat", "messages": messages}).json()
        text = out["choices"][0]["message"]["content"]
        assert text == llama_predictor.chat(messages) and out["model"] == "tiny-chat"
        assert out["usage"]["prompt_tokens"] == len(llama_predictor.prompt_ids(messages))
        # re-counted from the text (a random model's broken UTF-8 re-tokenizes longer), at most max_new_tokens
        assert out["usage"]["completion_tokens"] == min(llama_predictor.count_tokens(text), 16)
        events = stream(client, "/v1/chat/completions", {"messages": messages, "stream_options":
                                                         {"include_usage": True}})
        assert check_stream_shape(events, usage=True) == out["choices"][0]["finish_reason"]
        assert joined(events) == text and events[-2]["usage"] == out["usage"]

        out = client.post("/v1/completions", json={"prompt": "The capital of France", "max_tokens": 5}).json()
        text = out["choices"][0]["text"]
        assert text == llama_predictor.complete("The capital of France", dataclasses.replace(
            llama_predictor.settings, max_new_tokens=5))
        events = stream(client, "/v1/completions", {"prompt": "The capital of France", "max_tokens": 5})
        assert check_stream_shape(events, kind="completion") == out["choices"][0]["finish_reason"]
        assert joined(events, "completion") == text

        seeded = {"messages": messages, "temperature": 1.0, "top_p": 0.9, "seed": 7, "max_tokens": 8}
        first, again = (client.post("/v1/chat/completions", json=seeded).json() for _ in range(2))
        assert first["choices"] == again["choices"]  # sampling with a seed repeats

        error = check_error(client.post("/v1/completions", json={"prompt": "word " * 300}), 400, "prompt", "context")
        assert error["code"] == "context_length_exceeded"
        check_error(client.post("/v1/completions", json={"prompt": ""}), 400, "prompt", "nothing to answer")


def test_workbench_serve_loads_a_generation_export_itself(llama_export, llama_predictor):
    with Running(llama_export) as url:  # make_server -> create_app -> the generation app, the model loaded there
        status, out = post_json(url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                               "max_tokens": 6})
        assert status == 200
        expected = llama_predictor.chat([{"role": "user", "content": "Hi"}],
                                        dataclasses.replace(llama_predictor.settings, max_new_tokens=6))
        assert out["choices"][0]["message"]["content"] == expected
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            health = json.loads(r.read())
        assert health["model"] == "tiny-chat" and health["context_length"] == 256
        with urllib.request.urlopen(url + "/v1/models", timeout=10) as r:
            assert [m["id"] for m in json.loads(r.read())["data"]] == ["tiny-chat"]
        # a client that leaves a stream: the predictor's stream (which holds its tokenizer) is closed, the next
        # request is answered
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "stream": True}
        req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        r = urllib.request.urlopen(req, timeout=30)
        assert r.readline().startswith(b"data: ")
        r.close()
        status, out = post_json(url + "/v1/completions", {"prompt": "Hello", "max_tokens": 4}, timeout=30)
        assert status == 200 and out["usage"]["completion_tokens"] <= 4
