"""Render a `symusic.Score` to stereo audio through a SoundFont synthesizer, and write it as WAV/FLAC/OGG/MP3.

TinySoundFont synthesizes offline with no audio device and no external program; the General MIDI SoundFont that
the ``pretty_midi`` package ships (``TimGM6mb.sf2``) is the default instrument set, so rendering works offline with
nothing beyond the Python dependencies. The synthesizer runs from one event to the next: each call renders a whole
block of samples in C, so the Python cost grows with the number of MIDI events, never with the number of samples.
"""

from __future__ import annotations

import heapq
import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile
import symusic

from museforge.io import atomic_write_bytes

if TYPE_CHECKING:
    import tinysoundfont

DEFAULT_SAMPLE_RATE = 44100
DEFAULT_SOUNDFONT_NAME = "TimGM6mb.sf2"
DRUM_BANK = 128  # the SoundFont bank that holds percussion kits

# Suffix → (soundfile format, subtype). WAV is 16-bit PCM: what every browser and player reads.
AUDIO_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}

# Event kinds, in the order they apply when several fall on the same sample: controllers and pitch bends first
# (a sustain pedal or bend set at a note's start must shape that note), then note-offs, then cuts of finished
# releases, then note-ons (a channel freed at this sample can take the next note at once).
_CONTROL, _BEND, _OFF, _CUT, _ON = 0, 1, 2, 3, 4
_ALL_SOUND_OFF = 120  # MIDI controller: silence every voice of a channel (TinySoundFont fades them in 10 ms)
_SUSTAIN_PEDAL = 64


def default_soundfont() -> Path:
    """The General MIDI SoundFont inside the installed ``pretty_midi`` package (found without importing it)."""
    spec = importlib.util.find_spec("pretty_midi")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_SOUNDFONT_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no default SoundFont: {DEFAULT_SOUNDFONT_NAME} was not found in the pretty_midi package "
        f"({'not installed' if spec is None else ', '.join(folders) or 'no package folder'}); "
        "install pretty_midi or pass soundfont=PATH to a .sf2 file"
    )


def _select_program(synth: tinysoundfont.Synth, sfid: int, channel: int, track: symusic.TrackSecond) -> None:
    """Set the track's General MIDI program (or drum kit) on a channel, falling back to preset 0 if the
    SoundFont lacks it (TimGM6mb has every melodic program but only a few drum kits)."""
    bank = DRUM_BANK if track.is_drum else 0
    program = int(track.program)
    if synth.sfpreset_name(sfid, bank, program) is None:
        program = 0
    if synth.sfpreset_name(sfid, bank, program) is None:
        kind = "drum kit" if track.is_drum else "melodic program"
        raise ValueError(
            f"the SoundFont has no {kind} {track.program} and no preset 0 in bank {bank} to fall back to"
        )
    synth.program_select(channel, sfid, bank, program, is_drums=bool(track.is_drum))


def _release_starts(stop: np.ndarray, controls: dict[str, np.ndarray], sample_rate: int) -> np.ndarray:
    """Sample where each note's release begins: its note-off, or the next pedal-up if the sustain pedal is down then
    (an infinitely late release when the pedal is never lifted)."""
    pedal = controls["number"] == _SUSTAIN_PEDAL
    if not pedal.any():
        return stop.astype(np.float64)
    order = np.argsort(controls["time"][pedal], kind="stable")
    times = np.rint(controls["time"][pedal][order] * sample_rate)
    down = controls["value"][pedal][order] >= 64
    last = np.searchsorted(times, stop, side="right") - 1
    held = (last >= 0) & down[np.maximum(last, 0)]
    ups = np.append(times[~down], np.inf)
    next_up = ups[np.searchsorted(ups[:-1], stop, side="right")]
    return np.where(held, np.maximum(next_up, stop), stop).astype(np.float64)


def _slots(start: np.ndarray, free_at: np.ndarray) -> tuple[np.ndarray, int]:
    """Give each note (sorted by start) the lowest-numbered slot that is free by its start; returns slots, count."""
    slots = np.empty(len(start), dtype=np.int64)
    busy: list[tuple[float, int]] = []  # heap of (free from sample, slot)
    count = 0
    for i, (begin, free) in enumerate(zip(start.tolist(), free_at.tolist(), strict=True)):
        if busy and busy[0][0] <= begin:
            _, slot = heapq.heappop(busy)
        else:
            slot, count = count, count + 1
        slots[i] = slot
        heapq.heappush(busy, (free, slot))
    return slots, count


def _track_events(
    track: symusic.TrackSecond, first_channel: int, sample_rate: int, release_seconds: float | None
) -> tuple[list[np.ndarray], int, float]:
    """One track's events as rows (sample, kind, channel, a, b) on channels ``first_channel…``; returns them, how
    many channels they use and the last sample where a note's release begins (the sustain pedal can hold a note
    past its note-off).

    With ``release_seconds``, each note plays on a channel of its own from a small pool and the channel is silenced
    that long after the note's release begins, then reused. Some SoundFont presets (TimGM6mb's strings) keep a
    released voice alive for seconds far below hearing, and a voice costs as much to render when inaudible: cutting
    the tails makes dense string parts several times faster with no audible change. Controllers and pitch bends go
    to every channel of the track's pool, so the pool behaves as one MIDI channel.
    """
    parts: list[np.ndarray] = []
    controls = track.controls.numpy() if len(track.controls) else None
    n_channels = 1
    last_release = 0.0
    if len(track.notes):
        notes = track.notes.numpy()
        keep = (notes["velocity"] > 0) & (notes["pitch"] >= 0) & (notes["pitch"] <= 127)
        start = np.rint(notes["time"][keep] * sample_rate).astype(np.int64)
        # A note lasts at least one sample, so its note-on is never cancelled by a note-off at the same instant.
        stop = np.maximum(
            np.rint((notes["time"] + notes["duration"])[keep] * sample_rate).astype(np.int64), start + 1
        )
        order = np.argsort(start, kind="stable")
        start, stop = start[order], stop[order]
        pitch = notes["pitch"][keep][order].astype(np.int64)
        velocity = np.minimum(notes["velocity"][keep][order], 127).astype(np.int64)
        released = (
            _release_starts(stop, controls, sample_rate) if controls is not None else stop.astype(float)
        )
        held = released[np.isfinite(released)]
        last_release = float(held.max()) if len(held) else 0.0
        if release_seconds is None:
            channel = np.full(len(start), first_channel, dtype=np.int64)
        else:
            cut = released + np.rint(release_seconds * sample_rate)
            slots, n_channels = _slots(start, cut)
            channel = first_channel + slots
            finite = np.isfinite(cut)
            parts.append(
                _rows(
                    cut[finite].astype(np.int64),
                    _CUT,
                    channel[finite],
                    np.full(finite.sum(), _ALL_SOUND_OFF),
                    0,
                )
            )
        parts.append(_rows(start, _ON, channel, pitch, velocity))
        # TinySoundFont ignores the sustain pedal, so a pedalled note's note-off is sent when the pedal lifts.
        ends = np.isfinite(released)
        parts.append(_rows(released[ends].astype(np.int64), _OFF, channel[ends], pitch[ends], 0))
    pool = np.arange(first_channel, first_channel + n_channels)
    if controls is not None:
        time = np.rint(controls["time"] * sample_rate).astype(np.int64)
        parts.extend(_rows(time, _CONTROL, ch, controls["number"], controls["value"]) for ch in pool)
    if len(track.pitch_bends):
        bends = track.pitch_bends.numpy()
        time = np.rint(bends["time"] * sample_rate).astype(np.int64)
        # symusic stores bends centred on 0 (−8192…8191); the synthesizer wants the raw 14-bit wheel value.
        wheel = np.clip(bends["value"].astype(np.int64) + 8192, 0, 16383)
        parts.extend(_rows(time, _BEND, ch, wheel, 0) for ch in pool)
    return parts, n_channels, last_release


def _rows(
    time: np.ndarray, kind: int, channel: np.ndarray | int, a: np.ndarray | int, b: np.ndarray | int
) -> np.ndarray:
    n = len(time)
    columns = [time, np.full(n, kind)] + [
        np.broadcast_to(np.asarray(c, np.int64), (n,)) for c in (channel, a, b)
    ]
    return np.column_stack(columns).astype(np.int64)


def render_score(
    score: symusic.Score,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    soundfont: Path | None = None,
    *,
    headroom_db: float = 1.0,
    tail_seconds: float = 1.0,
    release_seconds: float | None = 1.0,
    max_seconds: float = 3600.0,
) -> np.ndarray:
    """Synthesize ``score`` as float32 stereo audio of shape ``[frames, 2]``, peak-normalized to ``-headroom_db``
    dBFS.

    Times follow the score's tempo map (tempo changes included); each track plays its own General MIDI program,
    drum tracks play the SoundFont's percussion bank under MIDI drum rules (as on channel 10), velocities,
    controllers (sustain pedal, volume, pan) and pitch bends are applied. ``tail_seconds`` of audio follow the last
    note end (or pedal release) so releases ring out. A note is silenced ``release_seconds`` after its release
    begins (``None``: let the SoundFont decide; see `_track_events` for why this saves time). ``max_seconds``
    refuses absurdly long scores (e.g. a corrupt upload with one note an hour in) before any memory is allocated.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if tail_seconds < 0:
        raise ValueError(f"tail_seconds must be ≥ 0, got {tail_seconds}")
    if release_seconds is not None and release_seconds < 0:
        raise ValueError(f"release_seconds must be ≥ 0 or None, got {release_seconds}")
    if headroom_db < 0:
        raise ValueError(f"headroom_db must be ≥ 0 (the peak in dB below full scale), got {headroom_db}")
    seconds = score.to("second")
    if seconds.note_num() == 0:
        raise ValueError("the score has no notes to render")
    parts: list[np.ndarray] = []
    channel_tracks: list[symusic.TrackSecond] = []  # the track each synthesizer channel plays
    last_release = 0.0
    for track in seconds.tracks:
        track_parts, n_channels, track_release = _track_events(
            track, len(channel_tracks), sample_rate, release_seconds
        )
        parts.extend(track_parts)
        channel_tracks.extend([track] * n_channels)
        last_release = max(last_release, track_release)
    events = np.concatenate(parts)
    events = events[np.lexsort((events[:, 1], events[:, 0]))]
    sound_end = last_release / sample_rate
    if sound_end > max_seconds:
        raise ValueError(f"the score lasts {sound_end:.0f} s, longer than max_seconds={max_seconds:.0f} s")
    frames = int(np.ceil((sound_end + tail_seconds) * sample_rate))

    path = soundfont if soundfont is not None else default_soundfont()
    if not Path(path).is_file():
        raise FileNotFoundError(f"SoundFont not found: {path}")
    try:
        import tinysoundfont
    except ImportError as exc:  # not a pyproject dependency: see the Makefile's install recipe
        raise ImportError(
            "audio rendering needs tinysoundfont: `pip install --no-deps tinysoundfont` (`make` does this; "
            "--no-deps skips PyAudio, which only live playback uses and which needs portaudio to build)"
        ) from exc
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(str(path))
    for channel, track in enumerate(channel_tracks):
        _select_program(synth, sfid, channel, track)

    audio = np.zeros((frames, 2), dtype=np.float32)
    position = 0
    for sample, kind, channel, a, b in events.tolist():
        sample = min(sample, frames)
        if sample > position:
            synth.generate_simple(sample - position, buffer=memoryview(audio[position:sample]))
            position = sample
        if kind == _ON:
            synth.noteon(channel, a, b)
        elif kind == _OFF:
            synth.noteoff(channel, a)
        elif kind in (_CONTROL, _CUT):
            synth.control_change(channel, a, b)
        else:
            synth.pitchbend(channel, a)
    if position < frames:
        synth.generate_simple(frames - position, buffer=memoryview(audio[position:]))
    return normalize_peak(audio, headroom_db)


def normalize_peak(audio: np.ndarray, headroom_db: float = 1.0) -> np.ndarray:
    """Scale ``audio`` in place so its largest absolute sample is ``10 ** (-headroom_db / 20)``; silence stays silent.

    The synthesizer mixes voices without limiting, so a dense score can exceed ±1: normalizing after rendering
    avoids clipping without guessing a gain per SoundFont.
    """
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 0.0:
        audio *= np.float32(10.0 ** (-headroom_db / 20.0) / peak)
    return audio


ENCODE_BLOCK = 65_536  # frames per libsndfile write


def encode_audio(audio: np.ndarray, sample_rate: int, suffix: str) -> bytes:
    """Encode audio in the format a file suffix names (``.wav``, ``.flac``, ``.ogg``, ``.mp3``) as bytes.

    Kept separate from `write_audio` so a server can cache or stream the bytes without touching a file.
    """
    key = suffix.lower()
    if key not in AUDIO_FORMATS:
        raise ValueError(f"unknown audio format {suffix!r}: use one of {', '.join(AUDIO_FORMATS)}")
    fmt, subtype = AUDIO_FORMATS[key]
    clipped = np.clip(audio, -1.0, 1.0)
    channels = 1 if clipped.ndim == 1 else clipped.shape[1]
    buffer = io.BytesIO()
    try:
        # Block by block: one write of ~50 s of stereo as OGG/Vorbis kills the process with SIGSEGV inside
        # vorbis_analysis_wrote (libsndfile as bundled with soundfile); smaller writes are safe.
        with soundfile.SoundFile(buffer, "w", sample_rate, channels, subtype, format=fmt) as out:
            for start in range(0, len(clipped), ENCODE_BLOCK):
                out.write(clipped[start : start + ENCODE_BLOCK])
    except soundfile.LibsndfileError as exc:
        raise ValueError(f"libsndfile cannot write {fmt}/{subtype} at {sample_rate} Hz: {exc}") from exc
    return buffer.getvalue()


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write audio to ``path`` in the format its suffix names, atomically (a reader never sees half a file)."""
    path = Path(path)
    atomic_write_bytes(path, encode_audio(audio, sample_rate, path.suffix))


def render_to_file(
    score: symusic.Score,
    path: Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    soundfont: Path | None = None,
    *,
    headroom_db: float = 1.0,
    tail_seconds: float = 1.0,
) -> np.ndarray:
    """Render ``score`` and write it to ``path``; returns the audio so callers can also measure or reuse it."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_FORMATS:
        # Checked before rendering so a typo costs nothing.
        raise ValueError(
            f"unknown audio format {path.suffix!r} in {path}: use one of {', '.join(AUDIO_FORMATS)}"
        )
    audio = render_score(score, sample_rate, soundfont, headroom_db=headroom_db, tail_seconds=tail_seconds)
    write_audio(path, audio, sample_rate)
    return audio
