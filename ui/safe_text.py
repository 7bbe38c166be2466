"""User text (job names, owners, errors) shown inside Markdown as the letters typed, never as
links, images, emphasis or HTML."""

from __future__ import annotations

import html
import re

# Every character Markdown (with GitHub's extensions: autolinks, tables, strikethrough) gives a
# meaning to; a backslash before each makes it literal.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:>])")


def as_text(value: object, limit: int = 300) -> str:
    text = str(value)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    # Quotes stay: they mean nothing outside an attribute, and their entity (&#x27;) would have
    # its '#' escaped below and show as those six characters.
    return _MARKDOWN.sub(r"\\\1", html.escape(text, quote=False))
