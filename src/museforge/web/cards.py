"""A model's card (its MODEL_CARD.md) as the HTML of its page.

The card's first line is the model's description, which the page shows as its lead, and its ``# name`` heading
repeats the page's title; the rest is CommonMark with tables. Raw HTML in a card is shown as text, never passed
through, and links to ``javascript:`` and other unsafe schemes are not made (markdown-it's link check).
"""

from __future__ import annotations

from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def card_html(text: str, name: str) -> str:
    """The card of model ``name`` below its description line and title heading, as HTML."""
    body = text.split("\n", 1)[1] if "\n" in text else ""
    body = body.lstrip("\n")
    title = f"# {name}\n"
    if body.startswith(title):
        body = body[len(title) :]
    return _MARKDOWN.render(body)
