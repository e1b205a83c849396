"""Label names and other user text placed in Markdown (the model card) and in fixed-width text
reports. Labels are the user's data: they may hold backticks, pipes, HTML, tabs or line breaks, and
none of that may break the table or the card around them."""

from __future__ import annotations

import html
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """Control characters (tab, line breaks, ...) shown as escapes, so the text takes one line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def md_code(text: str) -> str:
    """An inline code span holding ``text`` verbatim, whatever backticks it contains (CommonMark:
    the fence is one backtick longer than the longest run inside, padded when it touches one)."""
    text = one_line(text)
    longest = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_cell(text: str) -> str:
    """Text for a Markdown table cell: one line, no cell breaks, no HTML."""
    return html.escape(one_line(text), quote=False).replace("|", "\\|")


def md_fence(content: str) -> str:
    """A fenced code block that ``content`` cannot close early."""
    longest = max((len(r) for r in re.findall(r"`{3,}", content)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{content}\n{fence}"
