"""`workbench serve`: answer JSON prediction requests over HTTP, on this machine by default.

Starlette (routing, requests, JSON responses) on uvicorn: a small, well-kept ASGI pair with no
framework on top. The model is loaded once (a ``Predictor``: ONNX Runtime when the export has
model.onnx); requests are read and answered on a worker thread so a long batch does not block /health.

    POST /predict  {"inputs": [...]}  ->  {"predictions": [...]}
    GET  /health                      ->  {"status": "ok", "task": ..., "backend": ..., "labels": [...]}
                                          (multi-label: also "thresholds", "thresholds_fallback", "label_separator")

A text-generation export is served with OpenAI-compatible routes instead (POST /v1/chat/completions,
/v1/completions, with streaming; GET /v1/models): see serve_openai.py.

Inputs by task: texts (classification, regression), ``[text, second text]`` pairs or
``{"text": ..., "text_pair": ...}`` (sentence pairs), texts or lists of tokens (tagging), base64-encoded
image files (images; line breaks and a ``data:image/...;base64,`` prefix are allowed). Predictions:
``{"label", "score", "probabilities"}`` (classes), ``{"score"}`` (regression), ``{"tokens", "tags",
"scores"}`` (tagging), ``{"labels": [the decided labels], "scores": {label: sigmoid score}}``
(multi-label: each label decided at the export's threshold for it; an empty list when none is). Bad
requests get a 4xx answer ``{"error": "..."}`` naming the problem (and the input's index): 400 not
JSON (or nested too deeply) or no "inputs" list, 401 no or a wrong API key (``--api-key``), 413 too
large, 422 an input of the wrong kind (or text that is not Unicode: a lone surrogate), 404/405 wrong
path or method; a bug answers 500 ``{"error": ...}`` and the server goes on.

Stopping (SIGTERM, Ctrl+C): no new connections are taken, the requests in flight are answered (for
at most GRACE_SECONDS, then they get 503), and the process exits (0 for SIGTERM, 130 for Ctrl+C).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import ipaddress
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..core.errors import InputError
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

# Per text to tag, in characters (a text or its tokens together): the tagger labels every word, so a
# longer text is refused (413) rather than cut, which would silently drop the end of its answer.
# Texts to classify are cut by the Predictor to the part the model reads (max_length tokens).
MAX_TEXT_CHARS = 100_000
GRACE_SECONDS = 10.0  # how long a stop waits for the requests in flight
API_KEY_ENV = "WORKBENCH_API_KEY"
FAULT_DELAY_ENV = "WORKBENCH_FAULT_SERVE_DELAY"  # test hook, see _fault_delay


class BadRequest(RequestError):
    """A /predict request answered with ``{"error": message}`` and its status."""


class Terminated(BaseException):
    """SIGTERM: raised by ``on_sigterm`` (a BaseException, like KeyboardInterrupt, so that no library's
    ``except Exception`` swallows it); ``workbench serve`` then exits 0."""


def on_sigterm(signum, frame) -> None:
    # While uvicorn serves, its own handler takes SIGTERM (a graceful stop) and calls this one after.
    raise Terminated()


def _text(s: str, where: str) -> str:
    """``s``, or BadRequest (422) if it holds a lone surrogate."""
    return check_text(s, where, 422, BadRequest)


def _image(x: Any, where: str) -> bytes:
    if not isinstance(x, str):
        raise BadRequest(422, f"{where}: an image is a base64-encoded file, as a string")
    s = x.strip()
    if s[:5].lower() == "data:":  # a data URL, as browsers and canvas.toDataURL() write them
        head, comma, s = s.partition(",")
        if not comma or ";base64" not in head.lower():
            raise BadRequest(422, f"{where}: a data: URL must hold base64 (data:image/png;base64,...)")
    s = "".join(s.split())  # line breaks, as `base64` writes every 76 characters
    try:
        return base64.b64decode(s, altchars=b"-_" if ("-" in s or "_" in s) else None, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(422, f"{where}: not valid base64") from None


def _validate(predictor, inputs: Any, max_inputs: int) -> list[Any]:
    """The inputs as ``Predictor.predict`` takes them, or BadRequest saying which one is wrong."""
    if not isinstance(inputs, list):
        raise BadRequest(400, 'the body must be a JSON object with "inputs": a list')
    if not inputs:
        raise BadRequest(422, '"inputs" is empty; give at least one input')
    if len(inputs) > max_inputs:
        raise BadRequest(413, f"{len(inputs)} inputs in one request; at most {max_inputs} (split the batch)")
    out = []
    for i, x in enumerate(inputs):
        where = f"inputs[{i}]"
        if predictor.modality == "image":
            out.append(_image(x, where))
        elif predictor.pairs:
            if isinstance(x, dict) and set(x) >= {"text", "text_pair"}:
                x = [x["text"], x["text_pair"]]
            if not (isinstance(x, list) and len(x) == 2 and all(isinstance(t, str) for t in x)):
                raise BadRequest(422, f'{where}: a sentence pair is ["text", "second text"] or '
                                      '{"text": ..., "text_pair": ...}')
            out.append([_text(t, where) for t in x])
        elif predictor.kind == "tags" and isinstance(x, list):
            if not all(isinstance(t, str) and t.strip() for t in x):
                raise BadRequest(422, f"{where}: a list of tokens must hold non-empty strings")
            size = sum(len(t) for t in x)
            if size > MAX_TEXT_CHARS:
                raise BadRequest(413, f"{where}: {len(x):,} tokens of {size:,} characters in all; at most "
                                      f"{MAX_TEXT_CHARS:,} characters a sentence (split it)")
            out.append([_text(t, f"{where}[{j}]") for j, t in enumerate(x)])
        else:
            if not isinstance(x, str):
                what = "a text or a list of tokens" if predictor.kind == "tags" else "a text (a string)"
                raise BadRequest(422, f"{where}: expected {what}, got {type(x).__name__}")
            if predictor.kind == "tags" and len(x) > MAX_TEXT_CHARS:
                raise BadRequest(413, f"{where}: a text of {len(x):,} characters; at most {MAX_TEXT_CHARS:,} a text "
                                      "to tag (split it)")
            out.append(_text(x, where))
    return out


def _parse(body: bytes) -> Any:
    """The JSON body, or BadRequest saying why it cannot be read."""
    return parse_json(body, BadRequest, "; inputs need two levels at most")


def _fault_delay() -> None:
    """WORKBENCH_FAULT_SERVE_DELAY=SECONDS[:FILE]: a test hook; each /predict waits SECONDS on its worker
    thread before predicting, after creating FILE (so a test knows that a request is in flight)."""
    spec = os.environ.get(FAULT_DELAY_ENV, "")
    if spec:
        seconds, _, marker = spec.partition(":")
        if marker:
            Path(marker).touch()
        time.sleep(float(seconds))


def _answer(predictor, body: bytes, max_inputs: int) -> list[dict[str, Any]]:
    """The predictions for a request's body (on a worker thread: reading 10 MB of JSON takes a while)."""
    from ..core.data.images import ImageProblem

    payload = _parse(body)
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest(400, 'the body must be a JSON object with "inputs": a list')
    inputs = _validate(predictor, payload["inputs"], max_inputs)
    _fault_delay()
    try:
        predictions = predictor.predict(inputs)
    except ImageProblem as e:
        # Which image: decode them one by one to say so (cheap next to the model, and only on failure).
        for i, x in enumerate(inputs):
            try:
                predictor.pixels(x)
            except ImageProblem as bad:
                raise BadRequest(422, f"inputs[{i}]: {bad}") from None
        raise BadRequest(422, str(e)) from None
    return predictions


def check_api_key(key: str) -> str | None:
    """Why ``key`` cannot be an API key, or None. It travels in an HTTP header, where spaces at its ends
    are dropped and only ASCII is safe."""
    if not key:
        return "the API key is empty"
    if not re.fullmatch(r"[!-~]+", key):
        return ("an API key is printable ASCII characters without spaces (e.g. python -c \"import secrets; "
                "print(secrets.token_urlsafe(32))\")")
    return None


class _KeyCheck:
    """ASGI middleware: every request but GET /health needs ``Authorization: Bearer KEY`` (401 without;
    checked before the body is read). /health answers without it, with no details of the model."""

    def __init__(self, app, key: bytes) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not (scope["path"] == "/health" and scope["method"] in ("GET", "HEAD")):
            problem = key_problem(authorization(scope), self.key)
            if problem:
                response = _error(401, problem)
                response.headers["WWW-Authenticate"] = 'Bearer realm="workbench"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(export_dir: str | Path, *, backend: str = "auto", int8: bool = False, max_inputs: int = 256,
               max_bytes: int = 10 * 1024 * 1024, predictor=None, precision: str = "auto", api_key: str | None = None):
    """The ASGI application (loads the model now, so a bad EXPORT_DIR fails before listening). With
    ``api_key``, every request but GET /health needs ``Authorization: Bearer API_KEY``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ..core.predict.predictor import Predictor
    from .serve_openai import create_generation_app, is_generation_export, is_generation_predictor

    if api_key is not None and check_api_key(api_key):
        raise InputError(f"--api-key: {check_api_key(api_key)}")
    if is_generation_predictor(predictor) or (predictor is None and is_generation_export(export_dir)):
        # A text-generation export: OpenAI-compatible routes (/v1/chat/completions, ...), see serve_openai.
        return create_generation_app(export_dir, predictor=predictor, api_key=api_key, max_inputs=max_inputs,
                                     max_bytes=max_bytes, backend=backend, int8=int8)
    key = api_key.encode("ascii") if api_key is not None else None
    predictor = predictor or Predictor(export_dir, backend=backend, int8=int8, precision=precision)

    async def health(request: Request) -> JSONResponse:
        if key is not None and key_problem(authorization(request.scope), key):
            return JSONResponse({"status": "ok"})  # up, and nothing about the model without the key
        return JSONResponse({"status": "ok", **predictor.describe()})

    async def predict(request: Request) -> JSONResponse:
        try:
            return await answer(request)
        except asyncio.CancelledError:  # the server is stopping and this request outlived GRACE_SECONDS
            return _error(503, "the server is stopping; this request was not finished in time: send it again")

    async def answer(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, max_bytes, BadRequest)
            predictions = await run_in_threadpool(_answer, predictor, body, max_inputs)
            return JSONResponse({"predictions": predictions})
        except BadRequest as e:
            return _error(e.status, str(e))
        except Exception as e:  # a bug: answer it (as JSON) and go on serving
            report_bug(e)
            return _error(500, bug_message(e))

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail or "error")

    return Starlette(routes=[Route("/health", health, methods=["GET"]), Route("/predict", predict, methods=["POST"])],
                     exception_handlers={HTTPException: http_error},
                     middleware=[Middleware(_KeyCheck, key=key)] if key is not None else None)


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port} is not a port number; give 0 to 65535 (0 picks a free one)")


def bind(host: str, port: int):
    """A listening socket, or InputError saying why not (the port is taken, the address is not ours)."""
    import socket

    check_port(port)
    sock = None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # here, so a port another program took (also without listening yet) is said now
    except (OSError, OverflowError, UnicodeError, ValueError) as e:
        if sock is not None:
            sock.close()
        why = getattr(e, "strerror", None) or str(e)
        if getattr(e, "errno", None) == errno.EADDRINUSE:
            why += " (another program listens there: stop it, or give another --port; 0 picks a free one)"
        raise InputError(f"cannot listen on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def exposure_warning(address: str, port: int, with_key: bool) -> str | None:
    """The warning for a server bound to ``address`` when that is not this machine only, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return None
    except ValueError:
        pass
    if with_key:
        access = ("requests need the API key (Authorization: Bearer KEY; GET /health answers without it, with no "
                  "details of the model). The traffic, key included, is plain HTTP: not encrypted; on a network "
                  "you do not trust, put an HTTPS proxy in front")
    else:
        access = (f"there is no authentication: anyone who can reach port {port} can use the model (give "
                  f"--api-key, or set {API_KEY_ENV}, to require a key; --host 127.0.0.1 keeps it to this "
                  "machine). The traffic is plain HTTP: not encrypted")
    return f"workbench: warning: listening on {address}:{port}: the model is reachable from other machines; {access}."


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, which stops for good even if a request hangs: once a stop is asked, the
        requests in flight get GRACE_SECONDS (then 503), and the process ends 5 s after that at the latest."""

        def handle_exit(self, sig, frame) -> None:
            first = not self.should_exit
            super().handle_exit(sig, frame)
            if first:
                grace = self.config.timeout_graceful_shutdown or 0
                busy = len(self.server_state.tasks)
                if busy:
                    print(f"workbench: stopping: answering the {busy} request(s) in flight first (at most {grace:g} "
                          "s)", file=sys.stderr, flush=True)
                watchdog = threading.Timer(grace + 5, _force_exit, args=(sig,))
                watchdog.daemon = True
                watchdog.start()

    return Server


def _force_exit(sig: int) -> None:
    print("workbench: requests were still running after the stop's time; stopped without them", file=sys.stderr,
          flush=True)
    os._exit(0 if sig == signal.SIGTERM else 130)


def make_server(export_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, grace: float = GRACE_SECONDS,
                **options):
    """(uvicorn server, its bound socket): ``server.run(sockets=[sock])`` serves until ``should_exit``."""
    import uvicorn

    check_port(port)
    from .serve_openai import is_generation_export

    if options.get("predictor") is None and not is_generation_export(export_dir):  # no export: said before the port
        from ..core.predict.predictor import read_meta

        read_meta(Path(export_dir).expanduser().resolve())
    sock = bind(host, port)  # before loading the model: a taken port is said at once
    try:
        app = create_app(export_dir, **options)
    except BaseException:
        sock.close()
        raise
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=grace)
    return _server_class()(config), sock


def serve(export_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    server, sock = make_server(export_dir, host=host, port=port, **options)
    address, bound = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    from .serve_openai import is_generation_export

    routes = ("POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health"
              if is_generation_export(export_dir) else "POST /predict, GET /health")
    print(f"workbench: serving {Path(export_dir).resolve()} on http://{shown}:{bound} ({routes}); Ctrl+C stops",
          flush=True)
    warning = exposure_warning(address, bound, options.get("api_key") is not None)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    server.run(sockets=[sock])
