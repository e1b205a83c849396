"""`workbench serve` for a text-generation export: OpenAI-compatible endpoints, so any OpenAI client
library (``base_url="http://127.0.0.1:8000/v1"``) works against a fine-tuned model.

    POST /v1/chat/completions  {"messages": [...], "max_tokens"|"max_completion_tokens", "temperature",
                                "top_p", "seed", "stop", "n": 1, "stream", "stream_options"}
                               -> a "chat.completion" object, or with "stream": true server-sent events of
                                  "chat.completion.chunk" objects ending with ``data: [DONE]``
    POST /v1/completions       {"prompt": "text", same options} -> "text_completion" object(s)
    GET  /v1/models            -> the one model served (its id: the export folder's name)
    GET  /health               -> {"status": "ok", "task": "text-generation", "model": ..., "generation": {...}}
    POST /predict              -> 400 pointing at /v1/chat/completions (a generation model answers chats)

Beyond OpenAI's fields, ``repetition_penalty`` (as vLLM takes it) is read. The ``model`` field is not
checked (clients send a fixed name); answers name the served model. Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``: 400 a bad request (not JSON, no messages, an unknown
role, a wrong type or range, more than the context holds, n != 1), 401 no or a wrong API key (the same
check as ``/predict``: ``Authorization: Bearer KEY``), 413 a body over --max-bytes or more than
--max-inputs messages, 404/405, 500 a bug (the server goes on), 503 stopping.

The model generates one answer at a time (an asyncio lock: requests wait their turn without holding a
thread); each generation runs on a worker thread, and a stream's pieces are pulled from the predictor's
iterator on worker threads, so /health and the event loop stay responsive. A stream that the client
leaves, or that reaches a stop string, closes the predictor's iterator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, cast

from ..core.errors import InputError
from ..core.predict.generation import is_generation_export as is_generation_export  # serve.py's hook
from ..core.tasks.table import TEXT_GENERATION
from .requests import (
    RequestError,
    authorization,
    bug_message,
    check_text,
    key_problem,
    parse_json,
    read_body,
    report_bug,
)

TASK = TEXT_GENERATION
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOPS = 4  # as OpenAI: at most 4 stop strings
MAX_PROMPT_CHARS = 1_000_000  # a completion's prompt; the model's context refuses far less, once tokenized
MAX_NEW_TOKENS = 32_768
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of the stream


# ---- errors ---------------------------------------------------------------------------------------

class ApiError(RequestError):
    """A request answered with an OpenAI-shaped error."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(status, message, param)
        self.code = code

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self):
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status)


def _bug(e: Exception) -> ApiError:
    return ApiError(500, bug_message(e))


def _input_error(e: InputError) -> ApiError:
    """A predictor's InputError (a prompt it cannot answer) as a 400, without the server's paths."""
    return ApiError(400, f"this model {e.problem}" if e.path else e.problem)


# ---- the request rules shared with serve.py (requests.py), answered in OpenAI's shape

def _parse(body: bytes) -> Any:
    """The JSON body, or ApiError (400) saying why it cannot be read."""
    return parse_json(body, ApiError)


def _text(s: str, where: str) -> str:
    """``s``, or ApiError (400, naming ``where``) if it holds a lone surrogate."""
    return check_text(s, where, 400, ApiError)


def _key_problem(scope: Any, key: bytes) -> str | None:
    """Why a request's Authorization header does not give ``key``, or None."""
    return key_problem(authorization(scope), key)


def is_generation_predictor(predictor: Any) -> bool:
    """Duck-typed (a GenerationPredictor, or a test's stand-in): it chats and streams."""
    return callable(getattr(predictor, "chat", None)) and callable(getattr(predictor, "stream_chat", None))


# ---- reading a request ----------------------------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One validated request: what to generate, and how."""
    kind: str  # "chat" | "completion"
    messages: list[dict[str, str]] | None
    prompt: str | None
    settings: Any  # a GenerationSettings
    explicit_max: bool  # max_tokens was given (a prompt too long for it is refused, not fitted)
    stop: list[str]
    stream: bool
    include_usage: bool


def _number(payload: dict[str, Any], name: str, lo: float, hi: float, integer: bool = False,
            lo_open: bool = False) -> Any:
    """``payload[name]`` checked (None when absent or null), or ApiError 400 naming it."""
    value = payload.get(name)
    if value is None:
        return None
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ApiError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, not "
                            f"{type(value).__name__}", param=name)
    number = float(cast(float, value))  # NaN (which JSON lets through) fails both tests below
    if not (lo < number if lo_open else lo <= number) or not number <= hi:
        low = f"above {lo:g}" if lo_open else f"at least {lo:g}"
        raise ApiError(400, f"'{name}' is {value}; it must be {low} and at most {hi:g}", param=name)
    return value


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ApiError(400, f"{where}[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) can be "
                                    "read by this model", param=where)
            texts.append(part["text"])
        value = "".join(texts)
    if not isinstance(value, str):
        raise ApiError(400, f"{where} must be a string (or a list of text parts), not {type(value).__name__}",
                       param=where)
    return _text(value, where)


def _messages(payload: dict[str, Any], max_inputs: int) -> list[dict[str, str]]:
    given = payload.get("messages")
    if given is None:
        raise ApiError(400, "'messages' is required: a list of {\"role\": ..., \"content\": ...} objects",
                       param="messages")
    if not isinstance(given, list) or not given:
        raise ApiError(400, "'messages' must be a non-empty list of {\"role\": ..., \"content\": ...} objects",
                       param="messages")
    if len(given) > max_inputs:
        raise ApiError(413, f"{len(given)} messages in one request; at most {max_inputs}", param="messages")
    out = []
    for i, m in enumerate(given):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with \"role\" and \"content\"", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise ApiError(400, f"{where}: unknown role {role!r}; this model takes "
                                f"{', '.join(map(repr, ROLES))}", param=f"{where}.role")
        if m.get("tool_calls") or m.get("function_call"):
            raise ApiError(400, f"{where}: tool calls are not supported by this server", param=where)
        out.append({"role": ROLES[role], "content": _content(m.get("content"), f"{where}.content")})
    return out


def _prompt(payload: dict[str, Any]) -> str:
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:  # OpenAI also takes a batch; one prompt is read
        prompt = prompt[0]
    if prompt is None:
        raise ApiError(400, "'prompt' is required: the text to continue", param="prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string (one prompt a request; token-id prompts are not read)",
                       param="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(413, f"the prompt is {len(prompt):,} characters; at most {MAX_PROMPT_CHARS:,}",
                       param="prompt")
    return _text(prompt, "prompt")


def _stops(payload: dict[str, Any]) -> list[str]:
    stop = payload.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(400, "'stop' must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"'stop' holds {len(stops)} strings; at most {MAX_STOPS}", param="stop")
    return [s for s in stops if s]


def _unsupported(payload: dict[str, Any]) -> None:
    n = _number(payload, "n", 1, 128, integer=True)
    if n is not None and n != 1:
        raise ApiError(400, f"'n' is {n}; this server answers one choice a request (n = 1): send the request "
                            "again with another seed for another answer", param="n")
    for name in ("logprobs", "top_logprobs", "tools", "functions", "echo", "suffix"):
        value = payload.get(name)
        if value not in (None, False, 0, [], ""):
            raise ApiError(400, f"'{name}' is not supported by this server", param=name)
    best_of = payload.get("best_of")
    if best_of not in (None, 1):
        raise ApiError(400, "'best_of' must be 1 on this server", param="best_of")
    if payload.get("model") is not None and not isinstance(payload["model"], str):
        raise ApiError(400, "'model' must be a string", param="model")


def _settings(payload: dict[str, Any], base: Any) -> tuple[Any, bool]:
    """The predictor's settings with the request's options over them, and whether max_tokens was given."""
    changes: dict[str, Any] = {}
    most = _number(payload, "max_completion_tokens", 1, MAX_NEW_TOKENS, integer=True)
    most = most if most is not None else _number(payload, "max_tokens", 1, MAX_NEW_TOKENS, integer=True)
    if most is not None:
        changes["max_new_tokens"] = most
    for name, field, lo, hi, integer, lo_open in (
            ("temperature", "temperature", 0, 2, False, False), ("top_p", "top_p", 0, 1, False, True),
            ("seed", "seed", 0, 2**63 - 1, True, False),
            ("repetition_penalty", "repetition_penalty", 0, 10, False, True)):
        value = _number(payload, name, lo, hi, integer, lo_open)
        if value is not None:
            changes[field] = value
    for name in ("frequency_penalty", "presence_penalty"):
        if payload.get(name) not in (None, 0, 0.0):
            raise ApiError(400, f"'{name}' is not supported; this server takes 'repetition_penalty' (1 = none)",
                           param=name)
    known = {f.name for f in dataclasses.fields(base)}
    missing = [k for k in changes if k not in known]
    if missing:
        raise ApiError(400, f"'{missing[0]}' is not supported by this model's generation settings", param=missing[0])
    settings = dataclasses.replace(base, **changes)
    if callable(getattr(settings, "check", None)):  # GenerationSettings' own rules, which also make floats floats
        try:
            settings.check()
        except InputError as e:
            raise ApiError(400, e.problem) from None
    return settings, most is not None


def read_job(payload: Any, kind: str, base_settings: Any, max_inputs: int) -> Job:
    """A request body checked into a Job, or ApiError saying what is wrong with it."""
    if not isinstance(payload, dict):
        raise ApiError(400, "the body must be a JSON object")
    _unsupported(payload)
    stream = payload.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    include_usage = bool(stream and options and options.get("include_usage"))
    messages = _messages(payload, max_inputs) if kind == "chat" else None
    prompt = _prompt(payload) if kind == "completion" else None
    settings, explicit = _settings(payload, base_settings)
    return Job(kind, messages, prompt, settings, explicit, _stops(payload), bool(stream), include_usage)


# ---- stop strings -----------------------------------------------------------------------------------

class StopCutter:
    """Cuts streamed text at the first stop string. Text that could be the start of a stop string is
    held back until the next piece shows whether it is, so no stop string's start is ever sent."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text that can be sent now (``stopped`` is set once a stop string is seen)."""
        if self.stopped:
            return ""
        text = self.held + piece
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.held = True, ""
            return text[:min(hits)]
        keep = max((k for s in self.stops for k in range(min(len(s) - 1, len(text)), 0, -1)
                    if s.startswith(text[len(text) - k:])), default=0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    cutter = StopCutter(stops)
    out = cutter.feed(text)
    return (out, True) if cutter.stopped else (out + cutter.flush(), False)


# ---- generating -------------------------------------------------------------------------------------

def _context_length(predictor: Any) -> int | None:
    """How many tokens the model reads at most (prompt and answer), where the predictor says it."""
    given = getattr(predictor, "context_length", None)
    if isinstance(given, int) and given > 0:
        return given
    config = getattr(getattr(predictor, "model", None), "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _prompt_tokens(predictor: Any, job: Job) -> int:
    """Tokens of the prompt the model reads: the templated conversation (or the text with its bos) where
    the predictor says it (GenerationPredictor does), else the count of the text alone."""
    if job.kind == "chat":
        assert job.messages is not None
        if callable(getattr(predictor, "prompt_ids", None)):
            return len(predictor.prompt_ids(job.messages))
        return sum(predictor.count_tokens(m["content"]) for m in job.messages)
    if callable(getattr(predictor, "text_ids", None)):
        return len(predictor.text_ids(job.prompt))
    return predictor.count_tokens(job.prompt)


def prepare(predictor: Any, job: Job) -> int:
    """The prompt's token count, after checking that prompt and answer fit the model's context (a
    max_tokens left to the export's default is lowered to fit). On a worker thread, under the lock."""
    used = _prompt_tokens(predictor, job)
    param = "messages" if job.kind == "chat" else "prompt"
    if used == 0:
        raise ApiError(400, f"the {param} hold no text: there is nothing to answer", param=param)
    context = _context_length(predictor)
    if context is None:
        return used
    room = context - used
    wanted = job.settings.max_new_tokens
    if room < 1:
        raise ApiError(400, f"this model's context is {context:,} tokens and the {param} take {used:,}; shorten them",
                       param=param, code="context_length_exceeded")
    if wanted > room:
        if job.explicit_max:
            raise ApiError(400, f"this model's context is {context:,} tokens: {used:,} in the {param} and "
                                f"max_tokens {wanted:,} do not fit; lower max_tokens to {room:,} at most or "
                                f"shorten the {param}", param="max_tokens", code="context_length_exceeded")
        job.settings = dataclasses.replace(job.settings, max_new_tokens=room)
    return used


def _finish(predictor: Any, job: Job, raw: str, stopped: bool, prompt_tokens: int) -> tuple[str, dict[str, int]]:
    """(finish_reason, usage) for an answer whose uncut text is ``raw``. The predictor returns text, not
    tokens, so the answer's tokens are counted by re-tokenizing it, at most max_new_tokens (text of broken
    UTF-8 re-tokenizes longer); "length" when that count reaches max_new_tokens."""
    completion = min(predictor.count_tokens(raw), job.settings.max_new_tokens) if raw else 0
    reason = "stop" if stopped or completion < job.settings.max_new_tokens else "length"
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
             "total_tokens": prompt_tokens + completion}
    return reason, usage


def generate(predictor: Any, job: Job) -> tuple[str, str, dict[str, int]]:
    """(text, finish_reason, usage) of a non-streamed answer; on a worker thread, under the lock."""
    prompt_tokens = prepare(predictor, job)
    if job.kind == "chat":
        raw = predictor.chat(job.messages, job.settings)
    else:
        raw = predictor.complete(job.prompt, job.settings)
    text, stopped = cut_at_stops(raw, job.stop)
    reason, usage = _finish(predictor, job, text if stopped else raw, stopped, prompt_tokens)
    return text, reason, usage


def open_stream(predictor: Any, job: Job) -> Iterator[str]:
    if job.kind == "chat":
        return iter(predictor.stream_chat(job.messages, job.settings))
    return iter(predictor.stream_complete(job.prompt, job.settings))


_END = object()


def _next_piece(pieces: Iterator[str] | None) -> Any:
    assert pieces is not None
    return next(pieces, _END)


def _close(pieces: Iterator[str] | None) -> None:
    close = getattr(pieces, "close", None)
    if callable(close):
        close()  # a generator: its generation stops (or is waited for) as the predictor arranges


# ---- answers --------------------------------------------------------------------------------------

class Service:
    """The served model and what every route needs of it."""

    def __init__(self, predictor: Any, model_id: str, created: int, max_inputs: int) -> None:
        self.predictor, self.model_id, self.created, self.max_inputs = predictor, model_id, created, max_inputs
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock(self) -> asyncio.Lock:
        """The lock that lets one generation run at a time (made in the running loop: a test client may
        run its requests on a new loop each)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    def model(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "workbench"}

    def head(self, job: Job) -> dict[str, Any]:
        prefix, kind = ("chatcmpl", "chat.completion") if job.kind == "chat" else ("cmpl", "text_completion")
        return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
                "model": self.model_id}

    def answer(self, job: Job, text: str, reason: str, usage: dict[str, int]) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if job.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=reason)
        return {**self.head(job), "choices": [choice], "usage": usage}


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _chunk(head: dict[str, Any], job: Job, text: str | None, reason: str | None, role: bool = False) -> str:
    choice: dict[str, Any] = {"index": 0}
    if job.kind == "chat":
        delta: dict[str, str] = {"role": "assistant", "content": ""} if role else {}
        if text:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    choice.update(logprobs=None, finish_reason=reason)
    chunk_head = {**head, "object": "chat.completion.chunk"} if job.kind == "chat" else head
    return _event({**chunk_head, "choices": [choice]})


def _make_stream_response(service: Service, job: Job):
    """A StreamingResponse that takes the generation lock before it answers: the prompt is checked under
    it (a 400 is still possible then), and the lock and the predictor's iterator are let go however the
    stream ends (done, a stop string, the client gone, the server stopping)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import StreamingResponse

    class EventStream(StreamingResponse):
        pieces: Iterator[str] | None = None
        prompt_tokens = 0

        async def __call__(self, scope, receive, send) -> None:
            import anyio

            async with service.lock():
                try:
                    self.prompt_tokens = await run_in_threadpool(prepare, service.predictor, job)
                    self.pieces = await run_in_threadpool(open_stream, service.predictor, job)
                except ApiError as e:
                    await e.response()(scope, receive, send)
                    return
                except InputError as e:
                    await _input_error(e).response()(scope, receive, send)
                    return
                except Exception as e:  # a bug: answer it and go on serving
                    report_bug(e)
                    await _bug(e).response()(scope, receive, send)
                    return
                try:
                    await super().__call__(scope, receive, send)
                except (ClientDisconnect, OSError):
                    pass  # the client left: nothing to answer
                finally:
                    with anyio.CancelScope(shield=True):  # also when the server stops: the generation ends first
                        await run_in_threadpool(_close, self.pieces)

        async def events(self) -> AsyncIterator[str]:
            head = service.head(job)
            cutter, raw = StopCutter(job.stop), []
            if job.kind == "chat":
                yield _chunk(head, job, None, None, role=True)
            try:
                while not cutter.stopped:
                    piece = await run_in_threadpool(_next_piece, self.pieces)
                    if piece is _END:
                        break
                    raw.append(piece)
                    text = cutter.feed(piece)
                    if text:
                        yield _chunk(head, job, text, None)
                rest = cutter.flush()
                if rest:
                    yield _chunk(head, job, rest, None)
                # Closed before counting: the predictor's stream holds its tokenizer until it ends.
                await run_in_threadpool(_close, self.pieces)
                full = "".join(raw)
                if cutter.stopped:
                    full = cut_at_stops(full, job.stop)[0]
                reason, usage = await run_in_threadpool(_finish, service.predictor, job, full, cutter.stopped,
                                                        self.prompt_tokens)
            except InputError as e:  # the status is sent already, so the stream says it, as OpenAI does
                yield _event(_input_error(e).body())
                return
            except Exception as e:  # a bug: the same
                report_bug(e)
                yield _event(_bug(e).body())
                return
            yield _chunk(head, job, None, reason)
            if job.include_usage:
                yield _event({**head, "object": "chat.completion.chunk" if job.kind == "chat" else head["object"],
                              "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"

    response = EventStream([], media_type="text/event-stream", headers=SSE_HEADERS)
    response.body_iterator = response.events()
    return response


async def _read_payload(request, max_bytes: int) -> Any:
    """The request's JSON body, read within ``max_bytes`` (counted as it arrives), or ApiError."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_parse, await read_body(request, max_bytes, ApiError))


def _completions_endpoint(service: Service, kind: str, max_bytes: int) -> Callable:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    async def endpoint(request):
        try:
            job = read_job(await _read_payload(request, max_bytes), kind, service.predictor.settings,
                           service.max_inputs)
            if job.stream:
                return _make_stream_response(service, job)
            async with service.lock():
                text, reason, usage = await run_in_threadpool(generate, service.predictor, job)
            return JSONResponse(service.answer(job, text, reason, usage))
        except ApiError as e:
            return e.response()
        except InputError as e:
            return _input_error(e).response()
        except asyncio.CancelledError:  # the server is stopping and this request outlived its grace time
            return ApiError(503, "the server is stopping; this request was not finished in time: send it "
                                 "again").response()
        except Exception as e:  # a bug: answer it and go on serving
            report_bug(e)
            return _bug(e).response()

    return endpoint


class _KeyCheck:
    """ASGI middleware: serve.py's API key check (every request but GET /health), answering 401 in
    OpenAI's shape under /v1/ (clients read it there) and as /predict does elsewhere."""

    def __init__(self, app, key: bytes) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not (scope["path"] == "/health" and scope["method"] in ("GET", "HEAD")):
            problem = _key_problem(scope, self.key)
            if problem:
                from starlette.responses import JSONResponse

                if scope["path"].startswith("/v1/"):
                    response = ApiError(401, problem, code="invalid_api_key").response()
                else:
                    response = JSONResponse({"error": problem}, status_code=401)
                response.headers["WWW-Authenticate"] = 'Bearer realm="workbench"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def load_generation_predictor(export_dir: str | Path, backend: str = "auto", int8: bool = False) -> Any:
    if backend == "onnx" or int8:
        raise InputError("is a text-generation export, served with PyTorch: --backend onnx and --int8 do not "
                         "apply to it", path=Path(export_dir))
    from ..core.predict.generation import GenerationPredictor

    return GenerationPredictor(export_dir)


def create_generation_app(export_dir: str | Path, *, predictor: Any = None, api_key: str | None = None,
                          max_inputs: int = 256, max_bytes: int = 10 * 1024 * 1024, backend: str = "auto",
                          int8: bool = False):
    """The ASGI application for a text-generation export (loads the model now). With ``api_key`` (checked
    by serve.create_app, which calls this), every request but GET /health needs ``Authorization: Bearer
    API_KEY``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    key = api_key.encode("ascii") if api_key is not None else None
    folder = Path(export_dir).expanduser().resolve()
    predictor = predictor or load_generation_predictor(folder, backend, int8)
    created = int(folder.stat().st_mtime) if folder.exists() else int(time.time())
    service = Service(predictor, folder.name, created, max_inputs)

    async def health(request: Request) -> JSONResponse:
        if key is not None and _key_problem(request.scope, key):
            return JSONResponse({"status": "ok"})  # up, and nothing about the model without the key
        described = predictor.describe() if callable(getattr(predictor, "describe", None)) else {}
        settings = predictor.settings
        return JSONResponse({"status": "ok", **described, "task": TASK, "model": service.model_id,
                             "generation": dataclasses.asdict(settings)})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [service.model()]})

    async def model(request: Request) -> JSONResponse:
        if request.path_params["model_id"] != service.model_id:
            return ApiError(404, f"no model {request.path_params['model_id']!r} here; this server has "
                                 f"{service.model_id!r}", param="model", code="model_not_found").response()
        return JSONResponse(service.model())

    async def predict(request: Request) -> JSONResponse:
        """/predict on a generation export: 400 pointing at the OpenAI routes (a chat model answers
        conversations, not a list of inputs; `workbench predict` does files of prompts)."""
        return JSONResponse({"error": "this export is a text-generation model: POST /v1/chat/completions with "
                                      "{\"messages\": [{\"role\": \"user\", \"content\": ...}]} (or /v1/completions "
                                      "with {\"prompt\": ...}); /predict answers the other tasks"}, status_code=400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)  # the only exception it is registered for
        if request.url.path.startswith("/v1/"):
            return ApiError(exc.status_code, exc.detail or "error").response()
        return JSONResponse({"error": exc.detail or "error"}, status_code=exc.status_code)

    routes = [Route("/health", health, methods=["GET"]), Route("/v1/models", models, methods=["GET"]),
              Route("/v1/models/{model_id:path}", model, methods=["GET"]),
              Route("/v1/chat/completions", _completions_endpoint(service, "chat", max_bytes), methods=["POST"]),
              Route("/v1/completions", _completions_endpoint(service, "completion", max_bytes), methods=["POST"]),
              Route("/predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error},
                     middleware=[Middleware(_KeyCheck, key=key)] if key is not None else None)
