"""A grammar mask that keeps sampled REMI sequences well formed, plus bar-count and per-bar attribute control.

The grammar (museforge's REMI, see `museforge.tokenizers.remi`)::

    BOS? Style? ( Bar [Rhythm Polyphony] TimeSig ( Position Tempo? ( [Program] Pitch Velocity Duration )* )* )* EOS

with every Position of a bar strictly greater than the previous one and inside the bar's length (numerator ×
positions per beat of the bar's time signature). A Position must carry a tempo or a note. The mask only looks at
the type of the last token plus a little bookkeeping (current position, bar length, bars so far), so it also
accepts any primer and recovers from tokens it does not expect.

It works on base REMI ids: with BPE one id stands for several tokens and this grammar does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from museforge.tokenizers.remi import RemiTokenizer

TOKEN_TYPES = (
    "PAD", "BOS", "EOS", "Style", "Rhythm", "Polyphony", "Bar", "TimeSig", "Position", "Tempo", "Program", "Pitch",
    "PitchDrum", "Velocity", "Duration", "FillHole", "FillStart", "FillEnd",
)  # fmt: skip


@dataclass
class _RowState:
    last: str | None = None  # type of the last token
    position: int = -1  # last Position in the current bar
    bar_positions: int = 0  # positions in the current bar (from its time signature)
    bars: int = 0  # Bar tokens seen
    drum: bool = False  # the last Program was drums
    bar_tokens: int = 0  # tokens since the last Bar (a cap on them guarantees that every bar ends)
    sounding: bool = False  # the current bar holds a note (a Position with only a Tempo does not count)
    voices: frozenset[int] = frozenset()  # the Program tokens used so far


class RemiGrammar:
    """``mask_fn`` for `generate_transformer`: ``grammar(prefix [B, t]) -> allowed bool [B, V]``.

    ``max_bars`` makes EOS the only way out once that many bars exist (and forbids EOS before), which is how a
    user asks for a length in bars; the last bar must hold a note before it ends (a silent last bar would not
    even show in the MIDI). With ``end_with_bar`` a Bar token after the last bar is allowed too, and the caller
    takes it as the end (replacing it by EOS): a model trained on windows cut from longer pieces rarely ends a
    piece with EOS, and with the Bar forbidden it piles notes into the last bar instead.
    ``bar_attributes[b] = (rhythm_class, polyphony_class)`` forces the attribute tokens of bar ``b`` (``None``
    leaves that bar to the model, and so does ``None`` for one of the two classes).
    ``max_bar_tokens`` lets a bar's content end only in a new bar or EOS once it holds that many tokens, so a
    model can never run on inside one bar.
    ``max_new_tokens`` is the sampling budget: a token is allowed only if the shortest well-formed way from it to
    the end (the bars still owed, a note in the last bar, EOS) still fits, so every sample ends within its
    budget whatever the model prefers; a budget too small for the bars asked for is a `ValueError`. Without it
    nothing bounds how long a model may linger inside its bars, and whether a sample ends in time depends on
    the weights, down to the float rounding of the machine that trained them.
    ``bar_time_signatures[b]`` forces the TimeSig token (an id) of bar ``b``, as a fill-in keeps the meter of the
    bars it writes (``None``: the model chooses).
    ``end_token`` is the type of token that ends a sample: EOS, or FillEnd after the bars a fill-in writes
    (`museforge.tokenizers.infill`), whose prompt holds every other bar of the piece (counted in ``max_bars``).
    ``programs`` (Program token ids) are the only Program tokens allowed, as a track fill-in writes one voice.
    ``max_voices`` caps the distinct Program tokens of a sequence (its prompt's included): once that many were
    used only they remain, so a multi-track model writes the parts asked for and no more.
    One instance follows one generation; a prefix that is not one token longer than the last one seen restarts
    the bookkeeping (the budget keeps counting from the first prefix seen).
    """

    def __init__(
        self,
        tokenizer: RemiTokenizer,
        *,
        max_bars: int | None = None,
        bar_attributes: Sequence[tuple[int | None, int | None] | None] | None = None,
        max_bar_tokens: int | None = None,
        end_with_bar: bool = False,
        max_new_tokens: int | None = None,
        end_token: str = "EOS",
        bar_time_signatures: Sequence[int | None] | None = None,
        programs: Collection[int] | None = None,
        max_voices: int | None = None,
    ) -> None:
        if tokenizer.is_trained:
            raise ValueError(
                "the REMI grammar mask needs a tokenizer without BPE (a BPE id spans several tokens)"
            )
        if max_bars is not None and max_bars < 1:
            raise ValueError(f"max_bars must be >= 1 or None, got {max_bars}")
        if max_bar_tokens is not None and max_bar_tokens < 1:
            raise ValueError(f"max_bar_tokens must be >= 1 or None, got {max_bar_tokens}")
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 or None, got {max_new_tokens}")
        if max_voices is not None and (max_voices < 1 or not tokenizer.config.use_programs):
            raise ValueError(
                f"max_voices needs a tokenizer with Program tokens and must be >= 1, got {max_voices}"
            )
        self.max_voices = max_voices
        self.tok = tokenizer
        self.max_bars = max_bars
        self.max_bar_tokens = max_bar_tokens
        self.end_with_bar = end_with_bar
        self.max_new_tokens = max_new_tokens
        self.end = end_token
        self.bar_time_signatures = list(bar_time_signatures or [])
        self.bar_attributes = [_forced_tokens(tokenizer, a) for a in bar_attributes or []]
        cfg = tokenizer.config
        self.positions_per_beat = max(r for _, _, r in cfg.beat_res)
        self.use_time_signatures = cfg.use_time_signatures
        self.use_tempos = cfg.use_tempos
        self.use_programs = cfg.use_programs
        self.note_len = 4 if cfg.use_programs else 3  # [Program] Pitch Velocity Duration
        v = tokenizer.vocab_size
        self.types: list[str] = []
        self.values: list[str] = []
        for i in range(v):
            kind, _, value = tokenizer.token_name(i).partition("_")
            self.types.append(kind)
            self.values.append(value)
        self.masks = {k: torch.tensor([t == k for t in self.types]) for k in TOKEN_TYPES}
        self.position_value = torch.tensor(
            [
                int(val) if kind == "Position" else -1
                for kind, val in zip(self.types, self.values, strict=True)
            ]
        )  # [V]
        self.drum_program = torch.tensor(
            [kind == "Program" and val == "-1" for kind, val in zip(self.types, self.values, strict=True)]
        )
        # Program tokens allowed (None: all): a track fill-in writes the one voice it fills.
        self.program_mask = torch.tensor(
            [kind != "Program" or programs is None or i in programs for i, kind in enumerate(self.types)]
        )
        self.default_bar_positions = 4 * self.positions_per_beat  # 4/4 until a TimeSig says otherwise
        self._rows: list[_RowState] = []
        self._seen = 0
        self._start: int | None = None  # the first prefix's length: the budget counts from there
        self._cache: dict[tuple[object, ...], Tensor] = {}  # allowed masks by the state parts they depend on

    # ---- bookkeeping -------------------------------------------------------------------------------------------

    def _advance(self, state: _RowState, token: int) -> None:
        kind = self.types[token] if 0 <= token < len(self.types) else "?"
        state.bar_tokens += 1
        if kind == "Bar":
            state.bars += 1
            state.position = -1
            state.bar_positions = self.default_bar_positions
            state.bar_tokens = 0
            state.sounding = False
        elif kind == "TimeSig":
            numerator = int(self.values[token].split("/")[0])
            state.bar_positions = numerator * self.positions_per_beat
        elif kind == "Position":
            state.position = int(self.values[token])
        elif kind == "Program":
            state.drum = self.values[token] == "-1"
            if token not in state.voices:
                state.voices = state.voices | {token}
        elif kind in ("Pitch", "PitchDrum"):
            state.sounding = True
        state.last = kind

    def restart(self) -> None:
        """Forget the prefixes seen, so the next call reads its prefix from the start: for a caller that replaced
        its sequences (best-of-N sampling keeping one candidate), which may by chance be one token longer."""
        self._rows, self._seen = [], 0

    def _sync(self, prefix: Tensor) -> None:
        b, t = prefix.shape
        first = self._start is None
        if first:
            self._start = t
        if len(self._rows) != b or t != self._seen + 1:
            self._rows = [_RowState(bar_positions=self.default_bar_positions) for _ in range(b)]
            self._seen = 0
        new = prefix[:, self._seen :].tolist()
        for state, tokens in zip(self._rows, new, strict=True):
            for token in tokens:
                self._advance(state, token)
        self._seen = t
        if first and self.max_new_tokens is not None:
            need = max(self._cost_after(s.last, s.bars) for s in self._rows)
            if need > self.max_new_tokens:
                raise ValueError(
                    f"a budget of {self.max_new_tokens} new tokens cannot hold what is asked"
                    f" ({self.max_bars} bars): the shortest well-formed ending takes {need}"
                )

    # ---- the grammar -------------------------------------------------------------------------------------------

    def _closers(self, state: _RowState) -> list[str]:
        """What may end a bar's content: another bar (if bars remain) or the end (if the count is reached, and
        once the last bar holds a note; with ``end_with_bar`` a Bar is an end too)."""
        if self.max_bars is None:
            return ["Bar", self.end]
        if state.bars < self.max_bars:
            return ["Bar"]
        if not state.sounding:  # no note in the last bar yet
            return []
        return [self.end, "Bar"] if self.end_with_bar else [self.end]

    # ---- the budget ---------------------------------------------------------------------------------------------

    def _bar_open_cost(self, index: int) -> int:
        """Tokens that open bar ``index`` (0-based): Bar, its forced attributes, its time signature."""
        forced = index < len(self.bar_attributes) and self.bar_attributes[index] is not None
        return 1 + 2 * forced + int(self.use_time_signatures)

    def _close_cost(self, bars: int) -> int:
        """Fewest tokens from the end of some content to EOS (inclusive) with ``bars`` bars opened: the bars
        still owed, a note (Position + note) in the last of them, EOS."""
        if self.max_bars is None or bars >= self.max_bars:
            return 1
        owed = sum(self._bar_open_cost(i) for i in range(bars, self.max_bars))
        return owed + 1 + self.note_len + 1

    def _cost_after(self, kind: str | None, bars: int) -> int:
        """Fewest tokens that must follow a token of type ``kind`` (with ``bars`` bars opened, that token
        included) for the sequence to end well formed, EOS included."""
        close = self._close_cost(bars)
        if kind in ("EOS", "PAD", self.end):
            return 0
        if kind == "Bar" and self.max_bars is not None and bars > self.max_bars:
            return 0  # end_with_bar: this Bar is the end
        if kind in (None, "BOS", "Style", "FillStart"):
            return self._bar_open_cost(bars) + self._cost_after("TimeSig", bars + 1)
        if kind == "Duration":
            return close
        rest_of_note = {
            "Velocity": 1, "Pitch": 2, "PitchDrum": 2, "Program": 3, "Position": self.note_len,
            "Tempo": self.note_len,  # a tempo alone does not make the bar sound: count a note after it
        }  # fmt: skip
        if kind in rest_of_note:
            return rest_of_note[kind] + close
        empty_bar = close if self.max_bars is None or bars < self.max_bars else 1 + self.note_len + 1
        return self._header_left(kind, bars) + empty_bar

    def _header_left(self, kind: str, bars: int) -> int:
        """Tokens of the current bar's header (attributes, time signature) still to come after ``kind``."""
        ts = int(self.use_time_signatures)
        if kind == "Bar":
            return self._bar_open_cost(bars - 1) - 1
        return {"Rhythm": 1 + ts, "Polyphony": ts}.get(kind, 0)

    def _within_budget(self, kinds: list[str], state: _RowState, remaining: int) -> list[str]:
        """The token types whose shortest ending still fits in ``remaining`` tokens (this one included); the
        cheapest ones when none does (a budget the first prefix already overran)."""
        bars = {k: state.bars + (k == "Bar") for k in kinds}
        cost = {k: 1 + self._cost_after(k, bars[k]) for k in kinds}
        fits = [k for k in kinds if cost[k] <= remaining]
        return fits or [k for k in kinds if cost[k] == min(cost.values(), default=0)]

    def _note_start(self) -> list[str]:
        return ["Program"] if self.use_programs else ["Pitch"]

    def _full(self, state: _RowState) -> bool:
        return self.max_bar_tokens is not None and state.bar_tokens >= self.max_bar_tokens

    def _allowed_types(self, state: _RowState) -> list[str]:
        last = state.last
        after_content = (
            self._closers(state)
            if self._full(state)
            else [*self._note_start(), "Position", *self._closers(state)]
        )
        table: dict[str | None, list[str]] = {
            None: ["BOS", "Style", "Bar"],
            "BOS": ["Style", "Bar"],
            "Style": ["Bar"],
            "FillStart": ["Bar"],
            "Bar": ["Rhythm", "TimeSig"]
            if self.use_time_signatures
            else ["Rhythm", "Position", *self._closers(state)],
            "Rhythm": ["Polyphony"],
            "Polyphony": ["TimeSig"] if self.use_time_signatures else ["Position", *self._closers(state)],
            "TimeSig": ["Position", *self._closers(state)],
            "Position": [*(["Tempo"] if self.use_tempos else []), *self._note_start()],
            "Tempo": after_content,
            "Program": ["PitchDrum"] if state.drum else ["Pitch"],
            "Pitch": ["Velocity"],
            "PitchDrum": ["Velocity"],
            "Velocity": ["Duration"],
            "Duration": after_content,
            "EOS": ["PAD"],
            self.end: ["PAD"],
            "PAD": ["PAD"],
        }
        return table.get(last, self._closers(state))

    def allowed(self, state: _RowState) -> Tensor:
        """Allowed next tokens [V] for one sequence's state (a shared tensor: do not modify it)."""
        bar = state.bars - 1
        forced = self.bar_attributes[bar] if 0 <= bar < len(self.bar_attributes) else None
        if state.last not in ("Bar", "Rhythm"):
            forced = None
        # Everything the mask depends on; sampling revisits few distinct states, so masks are built once each.
        kinds = self._allowed_types(state)
        if self.max_new_tokens is not None and self._start is not None:
            kinds = self._within_budget(kinds, state, self.max_new_tokens - (self._seen - self._start))
        meter = self.bar_time_signatures[bar] if 0 <= bar < len(self.bar_time_signatures) else None
        voices = self._voices_left(state)
        key = (
            state.last,
            state.position,
            state.bar_positions,
            state.drum,
            state.sounding,
            tuple(kinds),
            forced,
            meter,
            voices,
        )
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        out = torch.zeros(len(self.types), dtype=torch.bool)
        for kind in kinds:
            out |= self.masks[kind]
        later = (self.position_value > state.position) & (self.position_value < state.bar_positions)
        out &= ~self.masks["Position"] | later
        out &= self.program_mask
        if voices is not None:
            out &= ~self.masks["Program"]
            out[list(voices)] = "Program" in kinds
        if meter is not None:
            out &= ~self.masks["TimeSig"]
            out[meter] = bool("TimeSig" in kinds)
        if forced is not None:
            token = forced[0] if state.last == "Bar" else forced[1]
            if token is not None:
                out = torch.zeros_like(out)
                out[token] = True
            elif state.last == "Bar":  # the polyphony is forced, so this bar needs its rhythm token too
                out = self.masks["Rhythm"].clone()
        self._cache[key] = out
        return out

    def _voices_left(self, state: _RowState) -> frozenset[int] | None:
        """The only Program tokens a row may still use (None: any the program mask allows)."""
        if self.max_voices is None or len(state.voices) < self.max_voices:
            return None
        return state.voices

    def __call__(self, prefix: Tensor) -> Tensor:
        self._sync(prefix)
        return torch.stack([self.allowed(s) for s in self._rows]).to(prefix.device)  # [B, V]


def _forced_tokens(
    tokenizer: RemiTokenizer, classes: tuple[int | None, int | None] | None
) -> tuple[int | None, int | None] | None:
    """Token ids of a bar's forced (rhythm, polyphony) classes; ``None`` where the model chooses."""
    if classes is None or classes == (None, None):
        return None
    rhythm, polyphony = classes
    ids = tokenizer.attribute_tokens(0 if rhythm is None else rhythm, 0 if polyphony is None else polyphony)
    return (None if rhythm is None else ids[0], None if polyphony is None else ids[1])


def stop_at_eos(eos_id: int) -> Callable[[Tensor], Tensor]:
    """A ``stop_fn`` that ends a sequence at its EOS token."""

    def stop(seqs: Tensor) -> Tensor:
        return seqs[:, -1] == eos_id

    return stop
