"""Fill-in-the-middle for REMI: bars ``first..last`` of a sequence moved after the rest, so a left-to-right model
writes them knowing the music on both sides.

We follow the "prefix, suffix, middle" arrangement of Bavarian et al. (2022, "Efficient Training of Language
Models to Fill in the Middle"), with the bar placeholders of MMM / MIDI-GPT (Ens & Pasquier 2020), so the model
knows how many bars to write and every bar of the suffix keeps its place::

    prefix  (Bar FillHole) × k  suffix  FillStart  Bar … (the k bars) …  FillEnd

Training rearranges a share of its windows this way (`museforge.data.dataset.FillInTheMiddle`, every token
still a target); sampling writes the prompt up to ``FillStart`` and lets the model write the bars and
``FillEnd``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from museforge.tokenizers.remi import RemiTokenizer


def fill_ids(tok: RemiTokenizer) -> tuple[int, int, int]:
    """(FillHole, FillStart, FillEnd) ids, or a `ValueError` for a tokenizer built without them."""
    if not tok.fill_ids:
        raise ValueError("this REMI tokenizer has no fill tokens: its model was not trained to fill in")
    return tok.fill_ids["FillHole"], tok.fill_ids["FillStart"], tok.fill_ids["FillEnd"]


def arrange(
    ids: Sequence[int], bar_starts: Sequence[int], first: int, last: int, tok: RemiTokenizer
) -> tuple[list[int], list[int]]:
    """(prompt, middle) of ``ids`` with bars ``first..last`` (0-based, inclusive; ``bar_starts`` indexes each
    Bar token) left to fill: the prompt ends with ``FillStart``, the middle is those bars' tokens then
    ``FillEnd``. A prompt and its middle joined are one training sequence."""
    hole, start, end = fill_ids(tok)
    if not 0 <= first <= last < len(bar_starts):
        raise ValueError(f"bars {first}..{last} are not inside the {len(bar_starts)} bars given")
    ids = list(ids)
    cut_from = bar_starts[first]
    cut_to = bar_starts[last + 1] if last + 1 < len(bar_starts) else len(ids)
    holes = [tok.bar_id, hole] * (last - first + 1)
    prompt = [*ids[:cut_from], *holes, *ids[cut_to:], start]
    return prompt, [*ids[cut_from:cut_to], end]
