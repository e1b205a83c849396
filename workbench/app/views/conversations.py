"""Conversations shown as chat turns: the Data page's view of a text-generation file (every example a
list of ``{"role", "content"}`` messages), and the HTML of one conversation that the Evaluate page's
generation view reuses for the example it details.

The turns are HTML in a QTextBrowser, one batch of conversations at a time ("Show more" adds the
next), so a file of 100,000 conversations opens as fast as one of ten. The tints of the turns come
from the palette, so the view reads in the light and the dark scheme alike and follows a switch.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

from PySide6.QtCore import QEvent
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QTextBrowser, QWidget

from ..evaluation.confusion import blend
from ..widgets.build import button, row, set_column

BATCH = 100  # conversations rendered at a time
ROLE_TITLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def role_title(role: str) -> str:
    return ROLE_TITLES.get(role, role.capitalize() or "?")


def turn_colours(palette: QPalette) -> dict[str, str]:
    """Each role's background, derived from ``palette``: the user's turns on the alternate base, the
    assistant's tinted with the highlight, the system prompt on the window colour."""
    base = palette.color(QPalette.ColorRole.Base)
    return {"user": palette.color(QPalette.ColorRole.AlternateBase).name(),
            "assistant": blend(base, palette.color(QPalette.ColorRole.Highlight), 0.14).name(),
            "system": palette.color(QPalette.ColorRole.Window).name(),
            "": base.name()}


def text_html(text: str) -> str:
    """``text`` escaped for rich text, its line breaks kept (and runs of spaces, for code)."""
    escaped = html.escape(text).replace("  ", "&nbsp; ")
    return escaped.replace("\r\n", "\n").replace("\n", "<br/>")


def block_html(title: str, text: str, background: str, note: str = "") -> str:
    """One titled block (a turn, a reference, an output) on ``background``; ``note`` dimmed after the title."""
    extra = f" <span style='font-weight:normal'>&nbsp;{html.escape(note)}</span>" if note else ""
    body = text_html(text) if text else "<i>(empty)</i>"
    return (f"<table width='100%' cellspacing='0' cellpadding='6' style='margin-bottom:4px'>"
            f"<tr><td style='background-color:{background}'><b>{html.escape(title)}</b>{extra}<br/>{body}</td></tr>"
            f"</table>")


def turns_html(messages: Iterable[dict[str, Any]], palette: QPalette) -> str:
    """A conversation's turns, role-labelled, each on its role's tint."""
    colours = turn_colours(palette)
    parts = []
    for message in messages:
        role = str(message.get("role") or "")
        parts.append(block_html(role_title(role), str(message.get("content") or ""), colours.get(role, colours[""])))
    return "".join(parts)


def _messages_of(example: Any) -> tuple[list[dict[str, Any]], int | None]:
    """(messages, file line or None) of a conversation given as a list of messages or as an object with
    ``messages`` (and ``line``), as the generation reader's ``Example`` is."""
    if isinstance(example, dict) and "messages" in example:
        return list(example["messages"]), example.get("line")
    messages = getattr(example, "messages", None)
    if messages is not None:
        return list(messages), getattr(example, "line", None)
    return list(example), None


class ConversationsView(QWidget):
    """The conversations of a data file as chat turns, with their count and the file's format;
    ``set_examples(examples, format_title)``, ``clear()``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.examples: list[Any] = []
        self.format_title = ""
        self.shown = 0  # conversations rendered so far
        self.count = QLabel()
        self.more = button("Show more", self.show_more, f"Show the next {BATCH} conversations", visible=False)
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(False)
        self.browser.setPlaceholderText("No conversations to show.")
        head = row((self.count, 1), self.more)
        head.setContentsMargins(6, 4, 6, 4)  # the count reads apart from the tab's frame
        set_column(self, head, (self.browser, 1))

    def set_examples(self, examples: Sequence[Any], format_title: str = "") -> None:
        """Show ``examples`` (lists of messages, or objects with ``messages`` and ``line``), the first
        batch of them now; ``format_title`` names the file's format ("OpenAI chat messages", ...)."""
        self.examples, self.format_title = list(examples), format_title
        self.shown = 0
        self.browser.clear()
        self.show_more()

    def clear(self) -> None:
        self.set_examples([], "")

    def show_more(self) -> None:
        """Render the next batch of conversations below those shown."""
        end = min(len(self.examples), self.shown + BATCH)
        self._render(end)
        self._update_count()

    def _render(self, end: int) -> None:
        """The first ``end`` conversations (the whole document again: a palette change re-tints them)."""
        palette = self.palette()  # the view's: on a change of scheme, the browser's follows only after this
        parts = []
        for i in range(end):
            messages, line = _messages_of(self.examples[i])
            where = f", line {line}" if line else ""
            parts.append(f"<p style='margin-top:10px'><b>Conversation {i + 1:,}</b>{where} &middot; "
                         f"{len(messages)} turn{'' if len(messages) == 1 else 's'}</p>")
            parts.append(turns_html(messages, palette))
        bar = self.browser.verticalScrollBar()
        position = bar.value()
        self.browser.setHtml("".join(parts))
        bar.setValue(position)  # "Show more" keeps the reader where they were
        self.shown = end

    def _update_count(self) -> None:
        n = len(self.examples)
        what = f"{n:,} conversation{'' if n == 1 else 's'}"
        if self.format_title:
            what += f" \u00b7 {self.format_title}"
        if 0 < self.shown < n:
            what += f" \u00b7 the first {self.shown:,} shown"
        self.count.setText(what if n else "")
        self.more.setVisible(self.shown < n)

    def text(self) -> str:
        """The shown conversations as plain text (tests, copying)."""
        return self.browser.toPlainText()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt API
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and self.shown:
            self._render(self.shown)
