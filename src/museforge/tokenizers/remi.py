"""REMI (Huang & Yang 2020) through miditok, extended with museforge's control tokens.

A sequence is::

    Style_<name>?  ( Bar  [Rhythm_<k> Polyphony_<k>]  <miditok REMI tokens of the bar>... )*

``Style_<name>`` (optional) conditions a whole piece on its corpus style; ``Rhythm_k`` / ``Polyphony_k`` give the
bar's MuseMorphose attribute classes (`museforge.tokenizers.attributes`), so a model can be steered bar by bar.
The control tokens are miditok *special* tokens: they sit at fixed ids right after PAD/BOS/EOS/MASK, never take
part in BPE merges, and `decode` drops them.

BPE (optional, `train_bpe`) is learned on the content of each bar *without* its Bar token, and applied the same
way, so every Bar stays one token: ``bar_starts`` can cut bar-aligned segments and the attribute tokens always
follow a Bar, with or without BPE.

With ``infill`` the vocabulary gains three tokens past miditok's (so a model trained without them keeps every id
and can be fine-tuned to fill in): ``FillHole`` stands in a bar left to fill, ``FillStart`` / ``FillEnd`` wrap the
filled bars, written after the rest of the piece (`museforge.tokenizers.infill`).

Without ``use_programs`` all pitched tracks are merged into one stream (one piano-like track on decode) and
drums are dropped; with it miditok writes a Program token before each note and drums are kept (program -1).

Multi-track voices. miditok's one-stream mode tells tracks apart only by program and merges tracks that share
one; in the corpus a chorale is four tracks all on program 0, a Renaissance motet up to eight on program 53 and a
string quartet 40, 40, 41, 42. So each pitched track gets its own *voice program* before tokenizing
(`voice_programs`): the first track on a program keeps it, a later track on the same program takes the first free
program of the same General MIDI family of eight (chorale S A T B -> 0 1 2 3, quartet -> 40 43 41 42, motet voices
-> 53 48 49 ...), in score order. We chose this over a separate Track/Voice token because it costs no token and no
vocabulary change (a Program token per note already names its voice, as in MMM / MIDI-GPT's per-track instrument
tokens, Ens & Pasquier 2020), the grammar already knows it, and a sampled piece still sounds like its instruments
(a family neighbour) when nothing maps it back. A program token per *note* (not per track segment) keeps REMI's
bar-by-bar time order, so a continuation or a bar fill-in sees all voices of the bar before it, and a chorale bar
reads as its chords. ``encode`` returns the map from voice program to the track's real program, and ``decode``
takes it (``programs``) to give a continued or refilled piece its own instruments back.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import miditok
import numpy as np
import symusic
from miditok import TokSequence

from museforge.score import end_tick
from museforge.tokenizers.attributes import (
    N_ATTRIBUTE_CLASSES,
    POLYPHONY_BOUNDARIES,
    RHYTHM_BOUNDARIES,
    AttributeBoundaries,
    bar_attributes,
    bar_bounds,
)
from museforge.tokenizers.base import TokenizerConfig, TokenTokenizer, as_tuple

DEFAULT_STYLES: tuple[str, ...] = (
    "chorale",
    "folk",
    "fiddle",
    "renaissance",
    "medieval",
    "classical",
    "user",
)
BASE_SPECIAL_TOKENS: tuple[str, ...] = ("PAD", "BOS", "EOS", "MASK")
FILL_TOKENS: tuple[str, ...] = ("FillHole", "FillStart", "FillEnd")
_STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9.+&-]*$")


def normalize_style(name: str) -> str:
    """Style names as tokens hold them: lower case, spaces and underscores as '-' (miditok splits on '_')."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


@dataclass(frozen=True)
class RemiConfig(TokenizerConfig):
    """REMI settings (miditok's names) plus the styles and attribute boundaries of the control tokens.

    ``beat_res`` is miditok's ``{(first beat, last beat): positions per beat}`` written as triples;
    ``time_signature_range`` is ``{denominator: numerators}`` written as pairs. The default adds 5/8, 7/8, 9/8,
    5/4, 7/4, 8/4, 12/4 and x/2, x/1 meters to miditok's, as folk and Renaissance music in the corpus needs them;
    miditok positions 8 steps per *beat* (the denominator's note value), so a 4/2 piece gets a 16th-note grid and
    a 4/1 piece an 8th-note grid, and drops the time signatures its vocabulary lacks (reading the bars as 4/4).
    """

    pitch_range: tuple[int, int] = (21, 109)
    beat_res: tuple[tuple[int, int, int], ...] = ((0, 4, 8), (4, 12, 4))
    num_velocities: int = 32
    use_tempos: bool = True
    num_tempos: int = 32
    tempo_range: tuple[int, int] = (40, 250)
    use_time_signatures: bool = True
    time_signature_range: tuple[tuple[int, tuple[int, ...]], ...] = (
        (8, (3, 5, 6, 7, 9, 12)),
        (4, (1, 2, 3, 4, 5, 6, 7, 8, 12)),
        (2, (1, 2, 3, 4, 6)),
        (1, (1, 2, 3, 4)),
    )
    use_chords: bool = False
    use_programs: bool = False
    infill: bool = False
    styles: tuple[str, ...] = DEFAULT_STYLES
    rhythm_boundaries: tuple[float, ...] = RHYTHM_BOUNDARIES
    polyphony_boundaries: tuple[float, ...] = POLYPHONY_BOUNDARIES
    # (style, parts): the usual number of parts (pitched tracks) of each style's training pieces, fitted when a
    # multi-track dataset is tokenized; a multi-track model asked for no number of parts writes that many.
    style_parts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "pitch_range",
            "beat_res",
            "tempo_range",
            "time_signature_range",
            "rhythm_boundaries",
            "polyphony_boundaries",
            "style_parts",
        ):
            object.__setattr__(self, name, as_tuple(getattr(self, name)))
        styles = tuple(dict.fromkeys(normalize_style(s) for s in self.styles))
        bad = [s for s in styles if not _STYLE_NAME.match(s)]
        if bad:
            raise ValueError(f"style names must be letters, digits or '.+&-', got {bad}")
        object.__setattr__(self, "styles", styles)
        low, high = self.pitch_range
        if not 0 <= low < high <= 128:
            raise ValueError(f"pitch_range must satisfy 0 <= low < high <= 128, got {self.pitch_range}")
        if not self.beat_res or any(len(r) != 3 or r[0] >= r[1] or r[2] < 1 for r in self.beat_res):
            raise ValueError(
                f"beat_res must be (first beat, last beat, positions per beat) triples, got {self.beat_res}"
            )
        if self.num_velocities < 1 or self.num_velocities > 127:
            raise ValueError(f"num_velocities must be in 1..127, got {self.num_velocities}")
        AttributeBoundaries(self.rhythm_boundaries, self.polyphony_boundaries)  # validates both

    def parts_of(self, style: str | None) -> int | None:
        """The usual number of parts of ``style``'s training pieces (None: not fitted, or no style)."""
        if style is None:
            return None
        return dict(self.style_parts).get(normalize_style(style))

    @property
    def boundaries(self) -> AttributeBoundaries:
        return AttributeBoundaries(self.rhythm_boundaries, self.polyphony_boundaries)

    def control_tokens(self) -> list[str]:
        """Names of the museforge control tokens, in id order."""
        return (
            [f"Style_{s}" for s in self.styles]
            + [f"Rhythm_{k}" for k in range(N_ATTRIBUTE_CLASSES)]
            + [f"Polyphony_{k}" for k in range(N_ATTRIBUTE_CLASSES)]
        )

    def to_miditok(self) -> miditok.TokenizerConfig:
        return miditok.TokenizerConfig(
            pitch_range=self.pitch_range,
            beat_res={(a, b): r for a, b, r in self.beat_res},
            num_velocities=self.num_velocities,
            special_tokens=[*BASE_SPECIAL_TOKENS, *self.control_tokens()],
            use_tempos=self.use_tempos,
            num_tempos=self.num_tempos,
            tempo_range=self.tempo_range,
            use_time_signatures=self.use_time_signatures,
            time_signature_range={den: list(nums) for den, nums in self.time_signature_range},
            use_chords=self.use_chords,
            use_programs=self.use_programs,
            one_token_stream_for_programs=True,
            encode_ids_split="no",  # museforge splits per bar itself (see the module docstring)
        )


def voice_programs(programs: Sequence[int]) -> list[int]:
    """A distinct program for each track (see the module docstring): a track keeps its program unless an earlier
    track has it, then takes the first free one of its General MIDI family of eight (else the first free one)."""
    taken: set[int] = set()
    out: list[int] = []
    for program in programs:
        if program in taken:
            family = range(program - program % 8, program - program % 8 + 8)
            program = next(
                (p for p in (*family, *range(128)) if p not in taken and p not in programs), program
            )
        taken.add(program)
        out.append(program)
    return out


@dataclass
class RemiEncoding:
    """Token ids of one piece, the index in ``ids`` of each Bar token (for bar-aligned segments) and, with
    ``use_programs``, each voice program's real program (for `RemiTokenizer.decode`)."""

    ids: np.ndarray  # int32
    bar_starts: np.ndarray  # int64
    programs: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


class RemiTokenizer(TokenTokenizer):
    """miditok REMI with style and per-bar attribute control tokens (see the module docstring)."""

    name: ClassVar[str] = "remi"
    config_class: ClassVar[type[TokenizerConfig]] = RemiConfig
    config: RemiConfig

    def __init__(self, config: RemiConfig | None = None, _miditok: miditok.REMI | None = None) -> None:
        super().__init__(config)
        self._tok = _miditok if _miditok is not None else miditok.REMI(self.config.to_miditok())
        self._setup_ids()

    def _setup_ids(self) -> None:
        vocab = self._tok.vocab
        self.bar_id: int = vocab["Bar_None"]
        self.pad_id: int = vocab["PAD_None"]
        self.bos_id: int = vocab["BOS_None"]
        self.eos_id: int = vocab["EOS_None"]
        self.style_ids: dict[str, int] = {s: vocab[f"Style_{s}"] for s in self.config.styles}
        self.rhythm_ids: tuple[int, ...] = tuple(vocab[f"Rhythm_{k}"] for k in range(N_ATTRIBUTE_CLASSES))
        self.polyphony_ids: tuple[int, ...] = tuple(
            vocab[f"Polyphony_{k}"] for k in range(N_ATTRIBUTE_CLASSES)
        )
        self._control = frozenset([*self.style_ids.values(), *self.rhythm_ids, *self.polyphony_ids])
        fills = range(len(self._tok), len(self._tok) + len(FILL_TOKENS)) if self.config.infill else ()
        self.fill_ids: dict[str, int] = dict(zip(FILL_TOKENS, fills, strict=False))
        self._control_array = np.array(sorted(self._control), dtype=np.int64)
        low, high = self.config.pitch_range
        # Pitch_<low>..Pitch_<high-1> have consecutive ids, which makes transposing in token space a shift.
        self.pitch_ids: np.ndarray = np.array([vocab[f"Pitch_{p}"] for p in range(low, high)], dtype=np.int64)
        # Token kinds that track infilling (`museforge.tokenizers.infill.arrange_track`) reads the stream by.
        names = {i: n.split("_", 1) for n, i in vocab.items()}
        self.program_ids: dict[int, int] = {int(v): i for i, (k, v) in names.items() if k == "Program"}
        self.position_ids: frozenset[int] = frozenset(i for i, (k, _) in names.items() if k == "Position")
        self.time_signature_ids: frozenset[int] = frozenset(
            i for i, (k, _) in names.items() if k == "TimeSig"
        )
        assert np.all(np.diff(self.pitch_ids) == 1), "miditok's Pitch tokens are expected to be consecutive"

    # ---- vocabulary -------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._tok) + len(self.fill_ids)

    @property
    def base_vocab_size(self) -> int:
        """Vocabulary size before BPE (the ids every BPE token decomposes into)."""
        return len(self._tok.vocab)

    @property
    def is_trained(self) -> bool:
        """Whether BPE has been learned."""
        return bool(self._tok.is_trained)

    @property
    def miditok(self) -> miditok.REMI:
        """The wrapped miditok tokenizer (for its vocabulary helpers; encode through this class)."""
        return self._tok

    def token_names(self) -> list[str] | None:
        """`token_name` of every id; None with BPE (merged tokens have no stable name)."""
        if self.is_trained:
            return None
        return [self.token_name(i) for i in range(self.vocab_size)]

    def with_fill_tokens(self) -> RemiTokenizer:
        """This tokenizer with the fill tokens appended (every other id unchanged): for fine-tuning to fill in."""
        return type(self)(replace(self.config, infill=True), _miditok=self._tok)

    def control_token_ids(self) -> frozenset[int]:
        """Ids of all Style/Rhythm/Polyphony tokens (a grammar mask needs them)."""
        return self._control

    def is_control(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Boolean mask of the control tokens in ``ids``."""
        return np.isin(np.asarray(ids), self._control_array)

    def style_token(self, style: str) -> int:
        """Id of ``Style_<style>``; the name is normalized as the config normalizes styles."""
        key = normalize_style(style)
        if key not in self.style_ids:
            raise ValueError(f"unknown style {style!r}; this tokenizer knows {', '.join(self.config.styles)}")
        return self.style_ids[key]

    def attribute_tokens(self, rhythm_class: int, polyphony_class: int) -> list[int]:
        """Ids of ``Rhythm_<rhythm_class>`` and ``Polyphony_<polyphony_class>`` (classes 0..7)."""
        for label, k in (("rhythm", rhythm_class), ("polyphony", polyphony_class)):
            if not 0 <= int(k) < N_ATTRIBUTE_CLASSES:
                raise ValueError(f"{label} class must be in 0..{N_ATTRIBUTE_CLASSES - 1}, got {k}")
        return [self.rhythm_ids[int(rhythm_class)], self.polyphony_ids[int(polyphony_class)]]

    def transpose_ids(self, ids: np.ndarray, semitones: int) -> np.ndarray | None:
        """``ids`` with every Pitch token moved by ``semitones``, or None if a pitch would leave the range.

        The same as tokenizing the transposed score (attribute classes do not depend on pitch), but costs
        one vector operation: training augments windows this way on the fly.
        """
        if self.is_trained:
            raise ValueError("token-space transposition needs a tokenizer without BPE")
        arr = np.asarray(ids, dtype=np.int64)  # caches store uint16: do the arithmetic signed
        first, last = int(self.pitch_ids[0]), int(self.pitch_ids[-1])
        is_pitch = (arr >= first) & (arr <= last)
        shifted = arr[is_pitch] + semitones
        if shifted.size and (shifted.min() < first or shifted.max() > last):
            return None
        out = arr.copy()
        out[is_pitch] = shifted
        return out

    def token_name(self, token_id: int) -> str:
        """Readable name of an id; a BPE token shows the base tokens it stands for, joined by '+'."""
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} outside the vocabulary 0..{self.vocab_size - 1}")
        if token_id >= len(self._tok):
            return f"{FILL_TOKENS[token_id - len(self._tok)]}_None"
        if token_id < self.base_vocab_size:
            return str(self._tok[token_id])
        piece = self._tok._model.id_to_token(token_id)
        return "+".join(self._tok._vocab_learned_bytes_to_tokens[piece]) or piece

    # ---- encoding ---------------------------------------------------------------------------------------------

    def voice_tracks(self, score: symusic.Score) -> dict[int, int]:
        """{voice program: index in ``score.tracks``} of the pitched tracks (empty without ``use_programs``)."""
        if not self.config.use_programs:
            return {}
        pitched = [i for i, t in enumerate(score.tracks) if not t.is_drum]
        return dict(zip(voice_programs([score.tracks[i].program for i in pitched]), pitched, strict=True))

    def voice_map(self, score: symusic.Score) -> dict[int, int]:
        """{voice program: the track's real program} of the pitched tracks (empty without ``use_programs``)."""
        if not self.config.use_programs:
            return {}
        real = [t.program for t in score.tracks if not t.is_drum]
        return dict(zip(voice_programs(real), real, strict=True))

    def _prepare(self, score: symusic.Score) -> symusic.Score:
        """The score miditok sees: pitched tracks merged and drums dropped unless ``use_programs``, else each
        pitched track on its own voice program."""
        if self.config.use_programs:
            out = score.copy()
            pitched = [t for t in out.tracks if not t.is_drum]
            for track, program in zip(pitched, self.voice_map(score), strict=True):
                track.program = program
            return out
        merged = symusic.Track(name="merged", program=0, is_drum=False)
        for track in score.tracks:
            if not track.is_drum:
                merged.notes.extend(track.notes)
        merged.notes.sort()
        out = symusic.Score(score.tpq)
        out.tempos = score.tempos.copy()
        out.time_signatures = score.time_signatures.copy()
        out.key_signatures = score.key_signatures.copy()
        out.tracks.append(merged)
        return out

    def _base_ids(self, score: symusic.Score) -> tuple[list[int], symusic.Score]:
        """miditok REMI ids before BPE, and the preprocessed (quantized) score they describe."""
        pre = self._tok.preprocess_score(self._prepare(score))
        if not pre.tracks or all(len(t.notes) == 0 for t in pre.tracks):
            return [], pre
        seq = self._tok.encode(pre, encode_ids=False, no_preprocess_score=True)
        if isinstance(seq, list):
            seq = seq[0]
        return list(seq.ids), pre

    def _split_bars(self, ids: list[int]) -> tuple[list[int], list[list[int]]]:
        """Base ids as (tokens before the first Bar, content of each bar without its Bar token)."""
        positions = [i for i, t in enumerate(ids) if t == self.bar_id]
        if not positions:
            return ids, []
        bars = [ids[a + 1 : b] for a, b in zip(positions, [*positions[1:], len(ids)], strict=False)]
        return ids[: positions[0]], bars

    def _bytes(self, ids: list[int]) -> str:
        return "".join(self._tok._vocab_base_id_to_byte[i] for i in ids)

    def _apply_bpe(self, chunks: list[list[int]]) -> list[list[int]]:
        """BPE-encode each chunk on its own (a chunk is one 'word'), as the trainer saw them."""
        if not self.is_trained:
            return chunks
        nonempty = [i for i, c in enumerate(chunks) if c]
        out: list[list[int]] = [[] for _ in chunks]
        if not nonempty:
            return out
        encoding = self._tok._model.encode([self._bytes(chunks[i]) for i in nonempty], is_pretokenized=True)
        for token_id, word in zip(encoding.ids, encoding.word_ids, strict=True):
            out[nonempty[word]].append(token_id)
        return out

    def bar_classes(self, score: symusic.Score, n_bars: int) -> tuple[np.ndarray, np.ndarray]:
        """Rhythm and polyphony classes of the first ``n_bars`` bars (bars past the music are class 0)."""
        rhythm = np.zeros(n_bars, dtype=np.int64)
        poly = np.zeros(n_bars, dtype=np.int64)
        if n_bars == 0:
            return rhythm, poly
        bounds = bar_bounds(score, until=max(end_tick(score), 1))[: n_bars + 1]
        r, p = self.config.boundaries.classes(*bar_attributes(score, bounds))
        rhythm[: len(r)], poly[: len(p)] = r[:n_bars], p[:n_bars]
        return rhythm, poly

    def encode(self, score: symusic.Score, style: str | None = None, attributes: bool = True) -> RemiEncoding:
        """Token ids of a score, optionally led by a style token and with attribute tokens after each Bar.

        Attributes are measured on the quantized score miditok tokenizes, over the bars it writes.
        """
        style_id = None if style is None else self.style_token(style)
        base, pre = self._base_ids(score)
        head, bars = self._split_bars(base)
        encoded = self._apply_bpe([head, *bars])
        head, bars = encoded[0], encoded[1:]
        rhythm, poly = self.bar_classes(pre, len(bars)) if attributes else (None, None)
        ids: list[int] = [] if style_id is None else [style_id]
        ids.extend(head)
        starts: list[int] = []
        for b, content in enumerate(bars):
            starts.append(len(ids))
            ids.append(self.bar_id)
            if rhythm is not None and poly is not None:
                ids.extend(self.attribute_tokens(rhythm[b], poly[b]))
            ids.extend(content)
        return RemiEncoding(
            np.asarray(ids, dtype=np.int32), np.asarray(starts, dtype=np.int64), self.voice_map(score)
        )

    # ---- decoding ---------------------------------------------------------------------------------------------

    def strip_controls(self, ids: np.ndarray | Sequence[int]) -> list[int]:
        """Ids without control tokens (and without PAD/BOS/EOS or fill tokens), as miditok expects them."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        dropped = [self.pad_id, self.bos_id, self.eos_id, *self.fill_ids.values()]
        keep = ~self.is_control(arr) & ~np.isin(arr, dropped)
        return [int(i) for i in arr[keep]]

    def decode(
        self, ids: np.ndarray | Sequence[int] | RemiEncoding, programs: dict[int, int] | None = None
    ) -> symusic.Score:
        """A score from token ids; control and PAD/BOS/EOS tokens are ignored, BPE tokens expanded. ``programs``
        (an encoding's own by default) gives each voice program's track its real program back."""
        if isinstance(ids, RemiEncoding):
            programs = ids.programs if programs is None else programs
            ids = ids.ids
        kept = self.strip_controls(ids)
        if any(not 0 <= i < self.vocab_size for i in kept):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1}")
        if not kept:
            return symusic.Score(self._tok.time_division)
        seq = TokSequence(ids=kept, are_ids_encoded=self.is_trained)
        score = self._tok.decode(seq if self._tok.one_token_stream else [seq])
        for track in score.tracks:
            if programs and not track.is_drum and track.program in programs:
                track.program = programs[track.program]
        return score

    # ---- BPE --------------------------------------------------------------------------------------------------

    def train_bpe(self, scores: Iterable[symusic.Score], vocab_size: int) -> None:
        """Learn BPE merges (miditok's trainer, Hugging Face BPE) over bar contents, up to ``vocab_size`` ids.

        Scores, not files: reading files is `museforge.data`'s work, a layer above the tokenizers."""
        if vocab_size <= self.base_vocab_size:
            raise ValueError(
                f"vocab_size {vocab_size} must exceed the base vocabulary ({self.base_vocab_size})"
            )
        corpus: list[list[str]] = []
        for score in scores:
            head, bars = self._split_bars(self._base_ids(score)[0])
            words = [self._bytes(c) for c in (head, *bars) if c]
            if words:
                corpus.append(words)
        if not corpus:
            raise ValueError("train_bpe needs at least one score with notes")
        self._tok.train(vocab_size=vocab_size, model="BPE", iterator=corpus)

    # ---- persistence ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.is_trained:
            state["miditok"] = self._tok.to_dict()
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        base = super().from_state_dict(state)
        if "miditok" not in state:
            return base
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "miditok.json"
            path.write_text(json.dumps(state["miditok"]), encoding="utf-8")
            tok = miditok.REMI(params=path)
        if tok.vocab != base.miditok.vocab:
            raise ValueError("saved miditok vocabulary does not match the saved REMI config")
        return cls(base.config, _miditok=tok)
