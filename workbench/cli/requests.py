"""What `workbench serve`'s two servers read from a request the same way: the body (within --max-bytes),
its JSON, text that must be Unicode, the API key (``Authorization: Bearer KEY``), and a bug's report.

serve.py answers /predict and imports serve_openai.py for a text-generation export's OpenAI-compatible
routes, so serve_openai.py cannot import serve.py back (tests/test_no_import_cycles.py): both import
these rules from here. Each server answers errors in its own shape, so a rule raises the ``error``
class it is given (serve.py's BadRequest, serve_openai.py's ApiError: both RequestErrors).
"""

from __future__ import annotations

import hmac
import json
import sys
from pathlib import Path
from typing import Any


class RequestError(Exception):
    """A request that is answered with an error: its HTTP status, the message, the field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def parse_json(body: bytes, error: type[RequestError] = RequestError, too_deep: str = "") -> Any:
    """The JSON body, or ``error`` (400) saying why it cannot be read. ``too_deep``: what the server
    takes, said when the body nests too deeply for Python's parser."""
    try:
        return json.loads(body)
    except RecursionError:
        raise error(400, "the body is nested too deeply (arrays or objects within each other) to be read as "
                         f"JSON{too_deep}") from None
    except UnicodeDecodeError as e:
        raise error(400, f"the body is not UTF-8 text ({e})") from None
    except ValueError as e:  # JSONDecodeError, or an integer of over 4,300 digits
        what = "holds a number of too many digits" if "digits" in str(e) else f"is not valid JSON ({e})"
        raise error(400, f"the body {what}") from None


def check_text(s: str, where: str, status: int, error: type[RequestError] = RequestError) -> str:
    """``s``, or ``error`` if it holds a lone surrogate (JSON's "\\ud800" escapes decode to one; no
    tokenizer can read it and no answer could be written back)."""
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise error(status, f"{where}: not valid Unicode text: a lone surrogate (\\u{ord(s[e.start]):04x}) at "
                                f"character {e.start}; send real characters (UTF-8)", param=where) from None
    return s


async def read_body(request: Any, max_bytes: int, error: type[RequestError] = RequestError) -> bytes:
    """A (Starlette) request's body, counted as it arrives, so a missing or false Content-Length cannot
    get past ``max_bytes``; ``error`` 413 over it, 400 when the client leaves half way."""
    from starlette.requests import ClientDisconnect

    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise error(413, f"the request body is {declared:,} bytes; at most {max_bytes:,}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise error(413, f"the request body is larger than {max_bytes:,} bytes")
    except ClientDisconnect:
        raise error(400, "the client went away before sending the whole body") from None
    return bytes(body)


def authorization(scope: Any) -> bytes | None:
    """The Authorization header of an ASGI request, as sent (None when it has none)."""
    return next((v for k, v in scope.get("headers") or () if k == b"authorization"), None)


def key_problem(header: bytes | None, key: bytes) -> str | None:
    """Why a request's Authorization header does not give ``key``, or None (compared in constant time)."""
    if not header:
        return 'this server needs an API key: send the header "Authorization: Bearer KEY"'
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return 'the Authorization header must be "Bearer KEY"'
    if not hmac.compare_digest(token.strip(), key):
        return "wrong API key"
    return None


def bug_message(e: BaseException) -> str:
    """What a request that failed on a bug is answered (500); the details go to the server's stderr."""
    return f"internal error (a bug in Workbench, reported on the server's stderr): {type(e).__name__}: {e}"


def report_bug(e: BaseException) -> None:
    """A bug on the server's stderr, with the file and line it was raised at; the server goes on."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" ({Path(tb.tb_frame.f_code.co_filename).name}, line {tb.tb_lineno})" if tb is not None else ""
    print(f"workbench: error: a request failed on an internal error (a bug; it was answered 500 and the server "
          f"goes on): {type(e).__name__}: {e}{where}", file=sys.stderr, flush=True)
