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


def arrange_track(ids: Sequence[int], program: int, tok: RemiTokenizer) -> tuple[list[int], list[int]]:
    """(prompt, middle) of a multi-track sequence with every note of voice ``program`` (a voice program, see
    `museforge.tokenizers.remi`) left to write again, as MMM / MIDI-GPT's track infilling (Ens & Pasquier 2020)
    arranged fill-in-the-middle style::

        the piece without that voice's notes  FillStart  Bar TimeSig (Position Program Pitch Velocity Duration)… …
        FillEnd

    The middle is that voice alone in REMI, bar by bar (every bar of the piece from its first Bar, each with the
    piece's TimeSig, so the voice lines up with the context), so the REMI grammar writes it and only it. Notes
    before the first Bar (a window cut mid-bar) stay in the prompt. A prompt and its middle joined are one
    training sequence."""
    _, start, end = fill_ids(tok)
    voice = tok.program_ids.get(program)
    if voice is None:
        raise ValueError(f"program {program} has no Program token in this vocabulary")
    ids = list(ids)
    bars = [i for i, t in enumerate(ids) if t == tok.bar_id]
    if not bars:
        raise ValueError("the sequence holds no bar to fill a voice in")
    context, middle = ids[: bars[0]], []
    position: int | None = None  # the context's Position, written into the middle before its first note there
    written = True
    i = bars[0]
    while i < len(ids):
        t = ids[i]
        if t == voice:
            if not written and position is not None:
                middle.append(position)
                written = True
            middle.extend(ids[i : i + 4])  # Program Pitch Velocity Duration
            i += 4
            continue
        context.append(t)
        if t == tok.bar_id or (t in tok.time_signature_ids and middle and middle[-1] == tok.bar_id):
            middle.append(t)
        elif t in tok.position_ids:
            position, written = t, False
        i += 1
    return [*context, start], [*middle, end]
