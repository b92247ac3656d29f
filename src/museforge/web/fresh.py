"""Songs that never repeat: without an explicit seed, a listener is never handed a song that duplicates or nearly
duplicates one they already got, nor a near-copy of the training music; such a song is re-sampled with a new
seed, and the song records how many tries it took. An explicit seed stays reproducible (nothing is re-sampled).

What a listener already got is the content id (`museforge.data.metadata.content_id`: the same notes) and an
originality index (`museforge.metrics.originality`, judged with the training check's thresholds) over their
newest `HISTORY_SONGS` songs, kept in memory per listener and extended with each new song.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import symusic

from museforge.data.metadata import content_id
from museforge.families.loaded import GeneratedSong
from museforge.metrics.originality import OriginalityIndex, check_originality, is_near_copy
from museforge.store import FileStore, Repository

HISTORY_SONGS = 500
MAX_TRIES = 8
CACHED_LISTENERS = 256


@dataclass
class History:
    """One listener's songs as the repeat check needs them."""

    song_ids: set[str] = field(default_factory=set)
    contents: set[str] = field(default_factory=set)
    index: OriginalityIndex | None = None

    def add(self, scores: list[symusic.Score]) -> None:
        if not scores:
            return
        self.contents |= {content_id(s) for s in scores}
        added = OriginalityIndex.build(scores, source="a listener's songs")
        self.index = added if self.index is None else self.index.merged(added)

    def repeats(self, score: symusic.Score) -> str | None:
        """Why ``score`` would repeat this listener's songs, or None when it is new to them."""
        if content_id(score) in self.contents:
            return "the same notes as a song you already got"
        if self.index is not None and is_near_copy(check_originality(score, self.index)):
            return "nearly the same as a song you already got"
        return None


class Histories:
    """Every listener's `History`, read from the store on first use and refreshed with songs made elsewhere."""

    def __init__(self, repo: Repository, files: FileStore) -> None:
        self.repo, self.files = repo, files
        self._cache: OrderedDict[str, History] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, owner: str) -> History:
        songs = self.repo.list_songs(owner=owner, limit=HISTORY_SONGS)
        with self._lock:
            history = self._cache.pop(owner, None) or History()
            self._cache[owner] = history
            while len(self._cache) > CACHED_LISTENERS:
                self._cache.popitem(last=False)
        new = [s for s in songs if s.id not in history.song_ids and "midi" in s.files]
        scores = []
        for song in new:
            path = self.files.resolve(song.files["midi"])
            if path.is_file():
                scores.append(symusic.Score.from_file(str(path)))
        history.add(scores)
        history.song_ids |= {s.id for s in new}
        return history


def fresh_songs(
    songs: list[GeneratedSong], history: History, resample: Callable[[], GeneratedSong]
) -> list[tuple[GeneratedSong, int]]:
    """Each song, or a re-sample of it, that neither repeats ``history`` (nor a song before it in the batch)
    nor copies the training music, with the tries it took. Raises ValueError after `MAX_TRIES` tries."""
    out = []
    batch = History()
    for song in songs:
        tries = 1
        while (why := _repeat(song, history, batch)) is not None:
            if tries == MAX_TRIES:
                raise ValueError(
                    f"could not make a song new to you in {MAX_TRIES} tries (the last was {why}): raise the "
                    "temperature or change the settings"
                )
            song, tries = resample(), tries + 1
        batch.add([song.score])
        out.append((song, tries))
    return out


def _repeat(song: GeneratedSong, history: History, batch: History) -> str | None:
    if song.originality is not None and song.originality.near_copy:
        return "a near-copy of the training music"
    return history.repeats(song.score) or batch.repeats(song.score)
