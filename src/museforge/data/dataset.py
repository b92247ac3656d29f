"""Cached token datasets: `museforge data tokenize` writes them, PyTorch `Dataset`s read them lazily.

Layout of ``DIR/tokens/<tokenizer>/``::

    tokenizer.json        the tokenizer that made the cache (load it with `load_tokenizer`)
    index.json            per split: pieces, tokens (or bars), dtype, item shape; and a fingerprint
    <split>.bin           every piece of the split concatenated: token ids, or piano-roll bars
    <split>.offsets.npy   int64 [n_pieces + 1]: where each piece starts in <split>.bin (tokens or bars)
    <split>.bars.npy      REMI only: global index of every Bar token, for bar-aligned segments
    <split>.pieces.json   piece ids, styles and transpositions, in the order of the offsets

`.bin` files are read through `np.memmap`, so a `Dataset` serves windows of a corpus larger than memory, and
each DataLoader worker maps the file itself (nothing big is pickled).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import Dataset

from museforge.data.corpora import STYLES
from museforge.data.manifest import SPLITS, PieceRecord, load_manifest
from museforge.io import atomic_write_json
from museforge.tokenizers import RemiEncoding, Tokenizer, build_tokenizer, load_tokenizer
from museforge.tokenizers.augment import transpose
from museforge.tokenizers.infill import arrange, arrange_track, fill_ids
from museforge.tokenizers.remi import normalize_style

if TYPE_CHECKING:
    from museforge.tokenizers.remi import RemiTokenizer

IGNORE_INDEX = -100  # label value the losses skip (padding)


@dataclass
class TokenizeOptions:
    config: dict[str, Any] | None = None  # tokenizer config overrides
    transpositions: tuple[int, ...] = ()  # extra transposed copies of *training* pieces (e.g. -3..3)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True
    force: bool = False


@dataclass
class TokenizeReport:
    out: Path
    up_to_date: bool
    splits: dict[str, dict[str, int]]
    failed: list[dict[str, str]]


def cache_dir(data_dir: Path | str, tokenizer: str) -> Path:
    return Path(data_dir) / "tokens" / tokenizer


_WORKER_TOKENIZER: Tokenizer | None = None


def _init_worker(state: dict[str, Any]) -> None:
    global _WORKER_TOKENIZER
    from museforge.tokenizers import TOKENIZERS

    _WORKER_TOKENIZER = TOKENIZERS[state["name"]].from_state_dict(state)


def _encode_piece(job: tuple[str, str, str, int]) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """Worker: (midi path, style, id, shift) → (data, bar starts or None, error message or None)."""
    import symusic

    path, style, _piece_id, shift = job
    assert _WORKER_TOKENIZER is not None
    try:
        score = symusic.Score(path)
        if shift:
            shifted = transpose(score, shift)
            if shifted is None:
                return None, None, None  # this transposition would leave the pitch range: simply not made
            score = shifted
        if _WORKER_TOKENIZER.name == "remi":
            enc = _WORKER_TOKENIZER.encode(score, style=style)
            assert isinstance(enc, RemiEncoding)
            return enc.ids, enc.bar_starts, None
        data = np.asarray(_WORKER_TOKENIZER.encode(score))
        if _WORKER_TOKENIZER.name == "pianoroll":
            data = data.transpose(1, 0, 2, 3)  # [bars, tracks, steps, pitches]: pieces concatenate along bars
        return data, None, None
    except Exception as exc:  # one unusable piece must not stop tokenizing the corpus
        return None, None, f"{type(exc).__name__}: {exc}"


def _token_dtype(tokenizer: Tokenizer) -> np.dtype:
    vocab = getattr(tokenizer, "vocab_size", None)
    if vocab is None:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if vocab <= np.iinfo(np.uint16).max else np.int32)


def _default_config(name: str, records: list[PieceRecord], config: dict[str, Any] | None) -> dict[str, Any]:
    """REMI needs a style token for every style in the data (LPD genres included); multi-track REMI also
    learns each style's usual number of parts."""
    config = dict(config or {})
    if name == "remi" and "styles" not in config:
        config["styles"] = list(dict.fromkeys([*STYLES, *sorted({r.style for r in records})]))
    if name == "remi" and config.get("use_programs") and "style_parts" not in config:
        config["style_parts"] = style_parts(records)
    return config


def style_parts(records: list[PieceRecord]) -> list[tuple[str, int]]:
    """(style, the most common number of tracks of its training pieces, a drum track counting as one), by
    style; the smaller count wins a tie. Pieces of every split count where a style has no training piece."""
    train = [r for r in records if r.split == "train"]
    trained = {r.style for r in train}
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    for r in train + [r for r in records if r.style not in trained]:
        if r.style:
            counts[normalize_style(r.style)][len(r.programs)] += 1
    return [(style, min(c, key=lambda n: (-c[n], n))) for style, c in sorted(counts.items())]


def tokenize_dataset(
    data_dir: Path, tokenizer_name: str, options: TokenizeOptions | None = None
) -> TokenizeReport:
    """Encode every piece of a built dataset with one tokenizer into the cache layout described above.

    The cache is rebuilt only when the manifest, the tokenizer or the transpositions changed; it is written into
    a temporary folder and renamed into place, so readers never see half a cache.
    """
    options = options or TokenizeOptions()
    records = load_manifest(data_dir)
    tokenizer = build_tokenizer(tokenizer_name, _default_config(tokenizer_name, records, options.config))
    state = tokenizer.state_dict()
    fingerprint = hashlib.sha256(
        json.dumps(
            [state, [(r.id, r.split, r.style) for r in records], list(options.transpositions)],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    final = cache_dir(data_dir, tokenizer_name)
    index_path = final / "index.json"
    if not options.force and index_path.exists():
        index = json.loads(index_path.read_text())
        if index.get("fingerprint") == fingerprint:
            return TokenizeReport(final, True, index["splits"], index.get("failed", []))

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{tokenizer_name}."))
    try:
        tokenizer.save(tmp / "tokenizer.json")
        dtype = _token_dtype(tokenizer)
        jobs_by_split: dict[str, list[tuple[str, str, str, int]]] = {s: [] for s in SPLITS}
        for r in records:
            shifts = (0, *[s for s in options.transpositions if s != 0]) if r.split == "train" else (0,)
            jobs_by_split[r.split].extend((str(r.midi_path(data_dir)), r.style, r.id, s) for s in shifts)
        total = sum(len(j) for j in jobs_by_split.values())
        splits: dict[str, dict[str, int]] = {}
        failed: list[dict[str, str]] = []
        progress = Progress(
            TextColumn(f"[bold]tokenizing ({tokenizer_name})"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not options.progress,
        )
        with (
            progress,
            ProcessPoolExecutor(max(1, options.workers), initializer=_init_worker, initargs=(state,)) as pool,
        ):
            task = progress.add_task("tokenize", total=total)
            for split, jobs in jobs_by_split.items():
                offsets, bars, pieces, item_shape = [0], [], [], None
                with (tmp / f"{split}.bin").open("wb") as fh:
                    for job, (data, bar_starts, error) in zip(
                        jobs, pool.map(_encode_piece, jobs, chunksize=8), strict=True
                    ):
                        progress.advance(task)
                        if error is not None:
                            failed.append({"id": job[2], "shift": str(job[3]), "error": error})
                            continue
                        if data is None or len(data) == 0:
                            continue
                        item_shape = list(data.shape[1:])
                        if bar_starts is not None:
                            bars.append(bar_starts + offsets[-1])
                        fh.write(np.ascontiguousarray(data, dtype=dtype).tobytes())
                        offsets.append(offsets[-1] + len(data))
                        pieces.append({"id": job[2], "style": job[1], "shift": job[3]})
                np.save(tmp / f"{split}.offsets.npy", np.asarray(offsets, dtype=np.int64))
                if tokenizer_name == "remi":
                    np.save(
                        tmp / f"{split}.bars.npy",
                        np.concatenate(bars).astype(np.int64) if bars else np.zeros(0, np.int64),
                    )
                (tmp / f"{split}.pieces.json").write_text(json.dumps(pieces))
                splits[split] = {"pieces": len(pieces), "tokens": offsets[-1], "item_shape": item_shape or []}
        atomic_write_json(
            tmp / "index.json",
            {
                "tokenizer": tokenizer_name,
                "dtype": dtype.str,
                "fingerprint": fingerprint,
                "splits": splits,
                "failed": failed,
                "transpositions": list(options.transpositions),
            },
        )
        if final.exists():
            trash = final.with_name(f".{final.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TokenizeReport(final, False, splits, failed)


class TokenCache:
    """Read access to one split of a token cache; the memmap opens on first use (so it survives fork/pickle)."""

    def __init__(self, data_dir: Path | str, tokenizer: str, split: str) -> None:
        self.dir = cache_dir(data_dir, tokenizer)
        index_path = self.dir / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(
                f"no {tokenizer} token cache in {data_dir}: run `museforge data tokenize "
                f"--data {data_dir} --tokenizer {tokenizer}`"
            )
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.index = json.loads(index_path.read_text())
        self.split = split
        self.dtype = np.dtype(self.index["dtype"])
        self.item_shape = tuple(self.index["splits"][split]["item_shape"])
        self.offsets = np.load(self.dir / f"{split}.offsets.npy")
        self.pieces: list[dict[str, Any]] = json.loads((self.dir / f"{split}.pieces.json").read_text())
        bars = self.dir / f"{split}.bars.npy"
        self.bars = np.load(bars) if bars.exists() else None
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            n = int(self.offsets[-1])
            if n == 0:
                self._data = np.zeros((0, *self.item_shape), dtype=self.dtype)
            else:
                self._data = np.memmap(
                    self.dir / f"{self.split}.bin", dtype=self.dtype, mode="r", shape=(n, *self.item_shape)
                )
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def tokenizer(self) -> Tokenizer:
        return load_tokenizer(self.dir / "tokenizer.json")

    def __len__(self) -> int:
        return len(self.pieces)

    def piece(self, i: int) -> np.ndarray:
        return np.asarray(self.data[self.offsets[i] : self.offsets[i + 1]])


class RandomTransposition:
    """Window augmentation: move all pitches by a random shift in ``-max_shift..max_shift`` that stays in range.

    Works in token space (`transpose_ids` of the REMI and performance tokenizers), so a cache holds each piece
    once and training still sees every key. Draws from torch's global RNG, which the trainer seeds and
    restores on resume (and seeds per DataLoader worker), so runs stay reproducible.
    """

    def __init__(self, tokenizer: Tokenizer, max_shift: int = 6) -> None:
        if not hasattr(tokenizer, "transpose_ids"):
            raise ValueError(f"the {tokenizer.name} tokenizer cannot transpose in token space")
        self.tokenizer, self.max_shift = tokenizer, max_shift

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        for _ in range(4):  # a few draws; a window that fits no shift is used as it is
            shift = int(torch.randint(-self.max_shift, self.max_shift + 1, ()).item())
            moved = self.tokenizer.transpose_ids(ids, shift)
            if moved is not None:
                return moved
        return ids


Augment = Callable[[np.ndarray], np.ndarray]


def chained(*augments: Augment | None) -> Augment:
    """One window augmentation that applies ``augments`` in turn (None: skipped)."""
    steps = [a for a in augments if a is not None]

    def apply(ids: np.ndarray) -> np.ndarray:
        for step in steps:
            ids = step(ids)
        return ids

    return apply


MAX_FILL_SPAN = 4  # bars a training window leaves to fill, at most


class FillInTheMiddle:
    """Window augmentation: with probability ``rate`` a window's bars ``i..i+k-1`` (k up to `MAX_FILL_SPAN`,
    whole bars followed by more music) are moved behind the rest (`museforge.tokenizers.infill.arrange`); the
    suffix's tail is cut so the window keeps its length. Draws from torch's global RNG, as
    `RandomTransposition` does, so runs stay reproducible.
    """

    def __init__(self, tok: RemiTokenizer, rate: float = 0.5) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"the fill-in-the-middle rate must be in (0, 1], got {rate}")
        fill_ids(tok)
        self.tok, self.rate = tok, rate

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if torch.rand(()).item() >= self.rate:
            return ids
        bars = np.flatnonzero(ids == self.tok.bar_id)
        spans = [
            (i, k)
            for k in range(1, MAX_FILL_SPAN + 1)
            for i in range(len(bars) - k)
            if len(ids) - bars[i + k] > 2 * k + 2  # a suffix survives the cut
        ]
        if not spans:
            return ids
        i, k = spans[int(torch.randint(len(spans), ()).item())]
        prompt, middle = arrange(ids.tolist(), bars.tolist(), i, i + k - 1, self.tok)
        overflow = len(prompt) + len(middle) - len(ids)
        del prompt[len(prompt) - 1 - overflow : len(prompt) - 1]  # the suffix's tail, keeping FillStart
        return np.asarray(prompt + middle, dtype=ids.dtype)


class FillTrack:
    """Window augmentation: with probability ``rate`` one voice of a multi-voice window (programs tokens, at
    least two voices after its first Bar) is moved behind the rest (`museforge.tokenizers.infill.arrange_track`),
    the tail cut so the window keeps its length. A window another fill already rearranged stays as it is; draws
    from torch's global RNG, as `FillInTheMiddle` does."""

    def __init__(self, tok: RemiTokenizer, rate: float = 0.5) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"the track-fill rate must be in (0, 1], got {rate}")
        if not tok.config.use_programs:
            raise ValueError("track fill needs a tokenizer with use_programs (one Program token per note)")
        self.tok, self.rate = tok, rate
        self.start = fill_ids(tok)[1]
        self.programs = {i: p for p, i in tok.program_ids.items() if p >= 0}

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if torch.rand(()).item() >= self.rate or self.start in ids:
            return ids
        bars = np.flatnonzero(ids == self.tok.bar_id)
        if not len(bars):
            return ids
        voices = sorted({self.programs[int(t)] for t in ids[bars[0] :] if int(t) in self.programs})
        if len(voices) < 2:
            return ids
        program = voices[int(torch.randint(len(voices), ()).item())]
        prompt, middle = arrange_track(ids.tolist(), program, self.tok)
        return np.asarray((prompt + middle)[: len(ids)], dtype=ids.dtype)


class TokenWindowDataset(Dataset):
    """Fixed-length training windows of token ids, never spanning two pieces.

    Item: ``input_ids`` [seq_len] and ``labels`` [seq_len] — the same ids, `IGNORE_INDEX` where padded (the
    loss shifts them by one). Pieces shorter than a window give one padded window; longer ones give windows
    every ``stride`` tokens, the last one ending at the piece's end. ``augment`` maps a window's ids to new ids
    (e.g. `RandomTransposition`).
    """

    def __init__(
        self,
        data_dir: Path | str,
        tokenizer: str,
        split: str,
        seq_len: int,
        stride: int | None = None,
        pad_id: int = 0,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {seq_len}")
        self.cache = TokenCache(data_dir, tokenizer, split)
        if self.cache.item_shape:
            raise ValueError(f"{tokenizer} caches hold arrays per step, not token ids: use PianoRollDataset")
        self.seq_len, self.stride, self.pad_id, self.augment = seq_len, stride or seq_len, pad_id, augment
        starts = []
        for i in range(len(self.cache)):
            begin, end = int(self.cache.offsets[i]), int(self.cache.offsets[i + 1])
            last = max(begin, end - seq_len)  # the last window ends exactly at the piece's end
            piece_starts = list(range(begin, last + 1, self.stride))
            if piece_starts[-1] != last:
                piece_starts.append(last)
            starts.extend((s, end) for s in piece_starts)
        self.windows = np.asarray(starts, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, i: int) -> np.ndarray:
        """The raw ids of window ``i`` (unpadded, before augmentation)."""
        start, end = (int(x) for x in self.windows[i])
        return np.asarray(self.cache.data[start : min(end, start + self.seq_len)], dtype=np.int64)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        chunk = self.window(i)
        if self.augment is not None:
            chunk = self.augment(chunk)
        ids = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        ids[: len(chunk)] = chunk
        labels = ids.copy()
        labels[len(chunk) :] = IGNORE_INDEX
        return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}


class BarSegmentDataset(Dataset):
    """REMI segments of ``n_bars`` whole bars (MuseMorphose trains on 16-bar segments).

    Item: ``input_ids`` [L] (unpadded; collate pads) and ``bar_starts`` [n_bars] (index of each Bar token in the
    item). Segments longer than ``max_tokens`` are skipped, so a batch's memory is bounded.
    """

    def __init__(
        self,
        data_dir: Path | str,
        split: str,
        n_bars: int,
        hop_bars: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.cache = TokenCache(data_dir, "remi", split)
        if self.cache.bars is None:
            raise ValueError("this cache has no bar index (was it made by the REMI tokenizer?)")
        if n_bars < 1:
            raise ValueError(f"n_bars must be >= 1, got {n_bars}")
        self.n_bars = n_bars
        bars = self.cache.bars
        segments = []
        for i in range(len(self.cache)):
            begin, end = int(self.cache.offsets[i]), int(self.cache.offsets[i + 1])
            lo, hi = np.searchsorted(bars, [begin, end])
            piece_bars = bars[lo:hi]
            for b in range(0, len(piece_bars) - n_bars + 1, hop_bars or n_bars):
                seg_end = int(piece_bars[b + n_bars]) if b + n_bars < len(piece_bars) else end
                if max_tokens is None or seg_end - int(piece_bars[b]) <= max_tokens:
                    segments.append((lo + b, seg_end))
        self.segments = np.asarray(segments, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        bar_index, end = (int(x) for x in self.segments[i])
        bar_pos = self.cache.bars[bar_index : bar_index + self.n_bars]
        start = int(bar_pos[0])
        ids = np.asarray(self.cache.data[start:end], dtype=np.int64)
        return {"input_ids": torch.from_numpy(ids), "bar_starts": torch.from_numpy(bar_pos - start)}


class PianoRollDataset(Dataset):
    """Segments of ``n_bars`` consecutive bars of multi-track piano roll (MuseGAN's 4-bar phrases).

    Item: ``roll`` bool [tracks, n_bars, steps_per_bar, pitches]. Segments whose bars hold fewer than
    ``min_notes_per_bar`` onsets on average are dropped — per segment, not per song, so a sparse intro does not
    remove a whole piece.
    """

    def __init__(
        self,
        data_dir: Path | str,
        split: str,
        n_bars: int = 4,
        hop_bars: int | None = None,
        min_notes_per_bar: float = 0.0,
    ) -> None:
        self.cache = TokenCache(data_dir, "pianoroll", split)
        if len(self.cache.item_shape) != 3:
            raise ValueError("not a piano-roll cache")
        self.n_bars = n_bars
        segments = []
        for i in range(len(self.cache)):
            begin, end = int(self.cache.offsets[i]), int(self.cache.offsets[i + 1])
            for s in range(begin, end - n_bars + 1, hop_bars or n_bars):
                if min_notes_per_bar > 0:
                    onsets = int((np.asarray(self.cache.data[s : s + n_bars]) == 2).sum())
                    if onsets < min_notes_per_bar * n_bars:
                        continue
                segments.append(s)
        self.segments = np.asarray(segments, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(self.segments[i])
        bars = np.asarray(self.cache.data[s : s + self.n_bars])  # [n_bars, tracks, steps, pitches]
        return {"roll": torch.from_numpy(np.ascontiguousarray(bars.transpose(1, 0, 2, 3) > 0))}
