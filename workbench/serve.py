"""`workbench serve`: answer JSON prediction requests over HTTP, on this machine by default.

Starlette (routing, requests, JSON responses) on uvicorn: a small, well-kept ASGI pair with no
framework on top. The model is loaded once (a ``Predictor``: ONNX Runtime when the export has
model.onnx); requests are answered on a worker thread so a long batch does not block /health.

    POST /predict  {"inputs": [...]}  ->  {"predictions": [...]}
    GET  /health                      ->  {"status": "ok", "task": ..., "backend": ..., "labels": [...]}

Inputs by task: texts (classification, regression), ``[text, second text]`` pairs or
``{"text": ..., "text_pair": ...}`` (sentence pairs), texts or lists of tokens (tagging), base64-encoded
image files (images). Predictions: ``{"label", "score", "probabilities"}`` (classes), ``{"score"}``
(regression), ``{"tokens", "tags", "scores"}`` (tagging). Bad requests get a 4xx answer
``{"error": "..."}`` naming the problem (and the input's index): 400 not JSON or no "inputs" list,
413 too large, 422 an input of the wrong kind, 404/405 wrong path or method.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path
from typing import Any

from .core.errors import InputError

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 100_000  # per text: longer ones are cut at --max-length tokens anyway


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
        if predictor.modality == "image":
            if not isinstance(x, str):
                raise BadRequest(422, f"inputs[{i}]: an image is a base64-encoded file, as a string")
            try:
                out.append(base64.b64decode(x, validate=True))
            except (binascii.Error, ValueError):
                raise BadRequest(422, f"inputs[{i}]: not valid base64") from None
        elif predictor.pairs:
            if isinstance(x, dict) and set(x) >= {"text", "text_pair"}:
                x = [x["text"], x["text_pair"]]
            if not (isinstance(x, list) and len(x) == 2 and all(isinstance(t, str) for t in x)):
                raise BadRequest(422, f'inputs[{i}]: a sentence pair is ["text", "second text"] or '
                                      '{"text": ..., "text_pair": ...}')
            out.append([t[:MAX_TEXT_CHARS] for t in x])
        elif predictor.kind == "tags" and isinstance(x, list):
            if not all(isinstance(t, str) and t.strip() for t in x):
                raise BadRequest(422, f"inputs[{i}]: a list of tokens must hold non-empty strings")
            out.append(x)
        else:
            if not isinstance(x, str):
                what = "a text or a list of tokens" if predictor.kind == "tags" else "a text (a string)"
                raise BadRequest(422, f"inputs[{i}]: expected {what}, got {type(x).__name__}")
            out.append(x[:MAX_TEXT_CHARS])
    return out


def _answer(predictor, inputs: list[Any]) -> list[dict[str, Any]]:
    from .core.data.images import ImageProblem

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


def create_app(export_dir: str | Path, *, backend: str = "auto", int8: bool = False, max_inputs: int = 256,
               max_bytes: int = 10 * 1024 * 1024, predictor=None, precision: str = "auto"):
    """The ASGI application (loads the model now, so a bad EXPORT_DIR fails before listening)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from .core.predict.predictor import Predictor

    predictor = predictor or Predictor(export_dir, backend=backend, int8=int8, precision=precision)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", **predictor.describe()})

    async def predict(request: Request) -> JSONResponse:
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > max_bytes:
            return _error(413, f"the request body is {declared:,} bytes; at most {max_bytes:,}")
        body = bytearray()
        async for chunk in request.stream():  # counted as it arrives: a missing or false length cannot get past
            body += chunk
            if len(body) > max_bytes:
                return _error(413, f"the request body is larger than {max_bytes:,} bytes")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"the body is not valid JSON ({e})")
        if not isinstance(payload, dict) or "inputs" not in payload:
            return _error(400, 'the body must be a JSON object with "inputs": a list')
        try:
            inputs = _validate(predictor, payload["inputs"], max_inputs)
            predictions = await run_in_threadpool(_answer, predictor, inputs)
        except BadRequest as e:
            return _error(e.status, str(e))
        return JSONResponse({"predictions": predictions})

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail or "error")

    return Starlette(routes=[Route("/health", health, methods=["GET"]), Route("/predict", predict, methods=["POST"])],
                     exception_handlers={HTTPException: http_error})


def _error(status: int, message: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def bind(host: str, port: int):
    """A listening socket, or InputError saying why not (the port is taken, the address is not ours)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family = infos[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def make_server(export_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, **options):
    """(uvicorn server, its bound socket): ``server.run(sockets=[sock])`` serves until ``should_exit``."""
    import uvicorn

    app = create_app(export_dir, **options)
    sock = bind(host, port)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    return uvicorn.Server(config), sock


def serve(export_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    server, sock = make_server(export_dir, host=host, port=port, **options)
    bound = sock.getsockname()[1]
    print(f"workbench: serving {Path(export_dir).resolve()} on http://{host}:{bound} (POST /predict, GET /health); "
          "Ctrl+C stops", flush=True)
    server.run(sockets=[sock])
