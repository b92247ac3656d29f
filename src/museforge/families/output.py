"""The output controls every family's request carries (``key``, ``tempo``, ``instruments``), applied around the
family's own sampling.

A key is reached by transposition (`museforge.generation.output`): a piece brought to continue, re-style,
fill in or accompany is transposed into the key *before* the model hears it, so the new music is written in
the key rather than moved afterwards; music made from nothing is transposed once written. A transposition
keeps the mode, so where a mode is asked, music from nothing is drawn again (a new seed each time, up to
`KEY_TRIES` draws) until the model writes in that mode; music still in the other mode, or a piece brought in
it, is moved to the asked key's relative (asked A minor, a tune in a major key goes to C major: the asked key
signature). Each song records the key it ended in (``in_key``, estimated by `museforge.metrics.key`), the
semitones it was moved (``transposed``) and, when drawn again for its mode, the draws it took (``key_tries``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, Self

from museforge.defaults import MAX_SEED
from museforge.generation.output import (
    KeyRequest,
    parse_key,
    transpose,
    transposition,
    with_programs,
    with_tempo,
)
from museforge.metrics.key import Key, estimate_key

if TYPE_CHECKING:
    import symusic

    from museforge.families.loaded import GeneratedSong

KEY_TRIES = 4  # draws of music from nothing to find the asked mode (each a full sample, so a bounded few)


class SongRequest(Protocol):
    """What these controls read of a family's request (`museforge.families.base.SongRequest`, which imports
    this module: a protocol keeps the import one-way)."""

    key: str | None
    tempo: float | None
    instruments: list[int] | None
    num_samples: int

    def drawn_seed(self) -> int: ...

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self: ...


Draw = Callable[["SongRequest", "symusic.Score | None"], list["GeneratedSong"]]


def target_tonic(found: Key, wanted: KeyRequest) -> int:
    """Where ``found``'s tonic must go: the asked tonic, or where the mode differs, the tonic of the asked key's
    relative in ``found``'s mode (major is 3 semitones above its relative minor)."""
    if wanted.mode is None or wanted.mode == found.mode:
        return wanted.tonic
    return (wanted.tonic + (3 if found.mode == "major" else -3)) % 12


def into_key(score: symusic.Score, wanted: KeyRequest) -> tuple[symusic.Score, int]:
    """The score transposed into ``wanted`` (unchanged without pitched notes), and by how many semitones."""
    found = estimate_key(score)
    if found is None:
        return score, 0
    shift = transposition(found, target_tonic(found, wanted), score)
    return (transpose(score, shift) if shift else score), shift


def in_mode(request: SongRequest, wanted: KeyRequest, draw: Draw) -> list[GeneratedSong]:
    """``request.num_samples`` songs from nothing, drawn again with the next seeds (at most `KEY_TRIES` draws)
    for those whose mode is not the asked one. What no draw fixed comes from the first draw, made with the asked
    seed, so asking again with any song's recorded seed gives that song again."""
    seed, wanted_n = request.drawn_seed(), request.num_samples
    kept: list[GeneratedSong] = []
    first_other: list[GeneratedSong] | None = None
    for t in range(KEY_TRIES):
        asked = request.model_copy(
            update={"seed": (seed + t) % MAX_SEED, "num_samples": wanted_n - len(kept)}
        )
        other = []
        for song in draw(asked, None):
            song.params["key_tries"] = t + 1
            found = estimate_key(song.score)
            (kept if found is None or found.mode == wanted.mode else other).append(song)
        first_other = other if first_other is None else first_other
        if len(kept) == wanted_n:
            break
    unmatched = (first_other or [])[: wanted_n - len(kept)]
    for song in unmatched:
        song.params["key_tries"] = t + 1  # every draw was tried for it
    return kept + unmatched


def shaped(
    song: GeneratedSong, request: SongRequest, wanted: KeyRequest | None, moved: int | None
) -> GeneratedSong:
    """One song in the asked key (``moved``: the source's transposition, None when made from nothing), tempo and
    instruments, with what was done recorded in its params."""
    score, params = song.score, dict(song.params)
    if wanted is not None:
        if moved is None:
            score, moved = into_key(score, wanted)
        found = estimate_key(score)
        params.update(in_key=None if found is None else str(found), transposed=moved)
    if request.tempo is not None:
        score = with_tempo(score, request.tempo)
    if request.instruments is not None:
        score = with_programs(score, request.instruments)
    return replace(song, score=score, params=params)


def shaped_songs(request: SongRequest, source: symusic.Score | None, draw: Draw) -> list[GeneratedSong]:
    """The songs ``draw`` makes for ``request`` and ``source``, with the output controls applied (see the
    module docstring)."""
    wanted = None if request.key is None else parse_key(request.key)
    moved: int | None = None
    if wanted is not None and source is not None:
        source, moved = into_key(source, wanted)
    if wanted is not None and wanted.mode is not None and source is None:
        songs = in_mode(request, wanted, draw)
    else:
        songs = draw(request, source)
    if wanted is None and request.tempo is None and request.instruments is None:
        return songs
    return [shaped(song, request, wanted, moved) for song in songs]
