"""SoundFont rendering of real scores: timing under tempo changes, drums, pitch, velocity, formats, atomic writes."""

import io
import os

import numpy as np
import pytest
import soundfile
import symusic

from conftest import FIXTURES, corpus_path
from museforge.audio import AUDIO_FORMATS, encode_audio, render_score, render_to_file, write_audio
from museforge.data.formats import load_score

SR = 44100
PEAK = 10 ** (-1.0 / 20)  # the default 1 dB of headroom


def melody(notes, program=0, is_drum=False, tempos=((0, 120.0),), tpq=480) -> symusic.Score:
    """A one-track score from (start quarter, length quarters, pitch, velocity) tuples."""
    score = symusic.Score(tpq)
    for quarter, qpm in tempos:
        score.tempos.append(symusic.Tempo(round(quarter * tpq), qpm))
    track = symusic.Track(name="t", program=program, is_drum=is_drum)
    for start, length, pitch, velocity in notes:
        track.notes.append(symusic.Note(round(start * tpq), round(length * tpq), pitch, velocity))
    score.tracks.append(track)
    return score


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def envelope(audio: np.ndarray, hop: int = 441) -> np.ndarray:
    """Peak level per 10 ms frame, mono."""
    mono = np.abs(audio).max(axis=1)
    n = len(mono) // hop
    return mono[: n * hop].reshape(n, hop).max(axis=1)


# The fixtures' durations, worked out by hand from how make_fixtures.py wrote them (not from symusic's tempo map).
TEMPO_FIXTURE_SECONDS = 4 * 0.5 + 4 * 60 / 90 + 4 * 60 / 140 + 3 * 1.0 + 0.75 * 1.0  # 120, 90, 140, 60 qpm
FIXTURE_SECONDS = {
    "single_track.mid": 15 * 0.5,  # 15 quarters at 120 qpm
    "multitrack_drums.mid": 16 * 0.5,  # four 4/4 bars at 120 qpm
    "tempo_changes.mid": TEMPO_FIXTURE_SECONDS,
}


@pytest.mark.parametrize("name", sorted(FIXTURE_SECONDS))
def test_fixture_renders_to_expected_length_and_peak(name):
    audio = render_score(symusic.Score(FIXTURES / name), SR)
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 2
    assert rms(audio) > 0.02
    assert float(np.abs(audio).max()) == pytest.approx(PEAK, abs=1e-6)
    expected = (FIXTURE_SECONDS[name] + 1.0) * SR  # + the default 1 s tail
    assert abs(len(audio) - expected) <= 2


def test_tempo_changes_move_the_onsets():
    # Staccato piano notes every 4 quarters; 120 qpm for the first 4 quarters, then 60 qpm: onsets at 0, 2, 6, 10 s.
    score = melody([(q, 0.25, 72, 100) for q in (0, 4, 8, 12)], tempos=((0, 120.0), (4, 60.0)))
    env = envelope(render_score(score, SR))
    loud = env > 0.1 * env.max()
    onsets = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    onsets = np.concatenate([[0] if loud[0] else [], onsets]) / 100.0  # 10 ms frames → seconds
    assert onsets == pytest.approx([0.0, 2.0, 6.0, 10.0], abs=0.03)


@pytest.mark.parametrize(("pitch", "hz"), [(57, 220.0), (69, 440.0), (81, 880.0)])
def test_single_note_energy_at_its_frequency(pitch, hz):
    audio = render_score(melody([(0, 2, pitch, 100)]), SR).mean(axis=1)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / SR)
    assert freqs[spectrum.argmax()] == pytest.approx(hz, rel=0.02)
    # The strongest component is the fundamental (above), and nothing below it: not an octave or fifth too low.
    below = (freqs > 40) & (freqs < hz * 0.9)
    assert spectrum[below].max() < 0.1 * spectrum.max()


def test_velocity_sets_loudness():
    audio = render_score(melody([(0, 1, 64, 30), (4, 1, 64, 120)]), SR)
    soft, loud = audio[: SR // 2], audio[2 * SR : 2 * SR + SR // 2]  # quarters 0 and 4 at 120 qpm
    assert rms(loud) > 2 * rms(soft) > 0


def test_drum_track_sounds_and_uses_the_percussion_bank():
    full = symusic.Score(FIXTURES / "multitrack_drums.mid")
    drums_only = full.copy()
    drums_only.tracks = [t for t in full.tracks if t.is_drum]
    assert drums_only.note_num() > 0
    drums = render_score(drums_only, SR)
    assert rms(drums) > 0.02
    # The same notes on a melodic channel are pitched piano tones, not drum hits.
    pitched = drums_only.copy()
    pitched.tracks[0].is_drum = False
    piano = render_score(pitched, SR)
    n = min(len(drums), len(piano))
    corr = np.corrcoef(drums[:n, 0], piano[:n, 0])[0, 1]
    assert abs(corr) < 0.5


def test_each_track_plays_its_own_program():
    notes = [(0, 2, 69, 100)]
    piano, strings = render_score(melody(notes, program=0), SR), render_score(melody(notes, program=48), SR)
    corr = np.corrcoef(piano[:, 0], strings[:, 0])[0, 1]
    assert abs(corr) < 0.5


def test_bach_chorale_renders_whole_piece():
    score = load_score(corpus_path("bach/bwv66.6"))
    seconds = score.to("second").end()
    audio = render_score(score, 22050, headroom_db=3.0, tail_seconds=0.5)
    assert len(score.tracks) == 4
    assert float(np.abs(audio).max()) == pytest.approx(10 ** (-3.0 / 20), abs=1e-6)
    assert abs(len(audio) - (seconds + 0.5) * 22050) <= 2
    # Sound throughout: every second of the piece (not the tail) carries signal.
    per_second = [rms(audio[i * 22050 : (i + 1) * 22050]) for i in range(int(seconds))]
    assert min(per_second) > 0.01


def test_bad_inputs_raise_clear_errors(tmp_path):
    empty = symusic.Score(FIXTURES / "empty.mid")
    with pytest.raises(ValueError, match="no notes"):
        render_score(empty)
    with pytest.raises(FileNotFoundError, match="SoundFont not found"):
        render_score(melody([(0, 1, 60, 90)]), soundfont=tmp_path / "missing.sf2")
    with pytest.raises(ValueError, match="max_seconds"):
        render_score(melody([(0, 1, 60, 90), (10_000, 1, 60, 90)]), max_seconds=600)


@pytest.fixture(scope="module")
def tune() -> np.ndarray:
    return render_score(symusic.Score(FIXTURES / "single_track.mid"), SR)


@pytest.mark.parametrize("suffix", sorted(AUDIO_FORMATS))
def test_every_format_reads_back(tmp_path, tune, suffix):
    path = tmp_path / f"song{suffix}"
    write_audio(path, tune, SR)
    back, sr = soundfile.read(path, dtype="float32")
    assert sr == SR and back.shape == tune.shape
    assert sorted(os.listdir(tmp_path)) == [path.name]  # the temp file was renamed, not left behind
    if suffix in {".wav", ".flac"}:
        assert np.abs(back - tune).max() < 2 / 32768  # 16-bit PCM
    else:  # lossy: the waveform survives closely, not exactly
        assert np.corrcoef(back[:, 0], tune[:, 0])[0, 1] > 0.9


def test_overwrite_is_atomic_and_unknown_suffix_writes_nothing(tmp_path, tune):
    path = tmp_path / "song.ogg"
    write_audio(path, tune, SR)
    write_audio(path, tune[: SR // 2], SR)
    assert soundfile.info(str(path)).frames == SR // 2
    with pytest.raises(ValueError, match=r"unknown audio format '\.aiffx'"):
        write_audio(tmp_path / "song.aiffx", tune, SR)
    with pytest.raises(ValueError, match="unknown audio format"):
        render_to_file(symusic.Score(FIXTURES / "single_track.mid"), tmp_path / "song.txt")
    assert sorted(os.listdir(tmp_path)) == ["song.ogg"]


def test_render_to_file_and_bytes_agree(tmp_path):
    score = symusic.Score(FIXTURES / "tempo_changes.mid")
    audio = render_to_file(score, tmp_path / "t.mp3", sample_rate=22050)
    info = soundfile.info(str(tmp_path / "t.mp3"))
    assert info.samplerate == 22050 and info.frames == len(audio) and info.channels == 2
    decoded, _ = soundfile.read(io.BytesIO(encode_audio(audio, 22050, ".WAV")), dtype="float32")
    assert np.abs(decoded - audio).max() < 2 / 32768


def test_sustain_pedal_holds_notes_until_it_lifts():
    # TinySoundFont ignores controller 64 itself: the renderer delays the note-off to the pedal-up.
    notes = [(0, 0.25, 60, 100)]  # an eighth note at 120 qpm: off at 0.125 s
    dry, pedalled = melody(notes), melody(notes)
    pedalled.tracks[0].controls.append(symusic.ControlChange(0, 64, 127))
    pedalled.tracks[0].controls.append(symusic.ControlChange(480 * 6, 64, 0))  # up at 3 s
    with_pedal = render_score(pedalled, SR, release_seconds=0.5, headroom_db=0)
    without = render_score(dry, SR, release_seconds=0.5, headroom_db=0)
    assert abs(len(with_pedal) - 4.0 * SR) <= 2 and abs(len(without) - 1.125 * SR) <= 2
    assert rms(with_pedal[int(2.5 * SR) : 3 * SR]) > 0.01  # still sounding just before the pedal lifts
    assert rms(without[int(0.75 * SR) :]) < 1e-4  # cut 0.5 s after its note-off
    assert rms(with_pedal[int(3.6 * SR) :]) < 1e-4  # cut 0.5 s after the pedal-up


def test_release_cut_is_inaudible_on_strings():
    score = load_score(corpus_path("bach/bwv66.6"))
    for track in score.tracks:
        track.program = 48  # TimGM6mb's strings keep released voices alive for seconds
    full = render_score(score, 22050, release_seconds=None)
    cut = render_score(score, 22050, release_seconds=1.0)
    assert full.shape == cut.shape
    assert rms(full - cut) < 0.02 * rms(full)


def test_long_audio_encodes_to_ogg_without_crashing_the_process():
    """One libsndfile write of ~50 s or more of stereo Vorbis segfaults; encode_audio writes in blocks."""
    rate = 22050
    t = np.arange(rate * 90) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    data = encode_audio(np.stack([tone, tone], axis=1), rate, ".ogg")
    audio, read_rate = soundfile.read(io.BytesIO(data))
    assert data.startswith(b"OggS") and read_rate == rate and abs(len(audio) / rate - 90) < 0.1
