"""Writes the small MIDI fixtures in this folder (run once; the files are committed).

Each fixture exercises one input case the pipeline must handle: a plain melody, several tracks with drums, an odd
and changing meter, tempo changes, three broken files (no notes, truncated, zero ticks per quarter), and a real
chorale whose sustain pedal and controller reset come after its last note (as in recorded piano).
"""

from pathlib import Path

import symusic

HERE = Path(__file__).parent
TPQ = 480


def track(name: str, program: int, notes: list[tuple[float, float, int, int]], is_drum: bool = False):
    t = symusic.Track(name=name, program=program, is_drum=is_drum)
    for start, dur, pitch, vel in notes:
        t.notes.append(symusic.Note(round(start * TPQ), round(dur * TPQ), pitch, vel))
    return t


def score(*tracks, sigs=((0, 4, 4),), tempos=((0, 120.0),)) -> symusic.Score:
    s = symusic.Score(TPQ)
    for time, num, den in sigs:
        s.time_signatures.append(symusic.TimeSignature(round(time * TPQ), num, den))
    for time, qpm in tempos:
        s.tempos.append(symusic.Tempo(round(time * TPQ), qpm))
    s.tracks.extend(tracks)
    return s


def pedal_tail() -> symusic.Score:
    """Bach's chorale BWV 269 as music21 writes it to MIDI, with events after the last note: the sustain pedal held
    over the final chord and released two beats after it ends, a reset-all-controllers four beats after (past the
    next bar line of the 3/4), and a pitch-bend reset eight beats after (which MusPy's length ignores)."""
    from music21 import corpus
    from music21.midi import translate

    chorale = symusic.Score.from_midi(translate.streamToMidiFile(corpus.parse("bach/bwv269")).writestr())
    bass = next(t for t in chorale.tracks if t.name == "Bass")
    beat = chorale.tpq
    last_onset = max(n.time for t in chorale.tracks for n in t.notes)
    end = max(n.end for t in chorale.tracks for n in t.notes)
    for time, number, value in ((last_onset, 64, 127), (end + 2 * beat, 64, 0), (end + 4 * beat, 121, 0)):
        bass.controls.append(symusic.ControlChange(time, number, value))
    bass.pitch_bends.append(symusic.PitchBend(end + 8 * beat, 0))
    return chorale


def main() -> None:
    # "Frère Jacques" opening, 4 bars of 4/4, with one rest.
    melody = [60, 62, 64, 60, 60, 62, 64, 60, 64, 65, 67]
    notes = [(i, 1, p, 80 + (i % 3) * 10) for i, p in enumerate(melody)] + [(12, 2, 67, 90), (14, 1, 65, 70)]
    score(track("Melody", 0, notes)).dump_midi(HERE / "single_track.mid")

    piano = [(b * 4 + beat, 1, p, 70) for b in range(4) for beat, p in enumerate([60, 64, 67, 72])]
    chords = [(b * 4, 4, p, 60) for b in range(4) for p in (48, 55)]
    bass = [(b * 4 + beat * 2, 2, 36 + (b % 2) * 5, 90) for b in range(4) for beat in range(2)]
    drums = [(i * 0.5, 0.25, 42, 80) for i in range(32)] + [
        (b * 4 + k, 0.25, 36 if k % 2 == 0 else 38, 100) for b in range(4) for k in range(4)
    ]
    score(
        track("Piano", 0, piano + chords),
        track("Bass", 33, bass),
        track("Drums", 0, drums, is_drum=True),
        track("Strings", 48, [(0, 16, 72, 50)]),
    ).dump_midi(HERE / "multitrack_drums.mid")

    # Two bars of 7/8 (3.5 quarters each), then two bars of 5/4.
    odd = [(i * 0.5, 0.5, 62 + (i % 7), 80) for i in range(14)] + [
        (7 + i, 1, 69 - i % 5, 80) for i in range(10)
    ]
    score(track("Odd", 73, odd), sigs=((0, 7, 8), (7, 5, 4))).dump_midi(HERE / "odd_meter.mid")

    tempo_notes = [(i, 0.75, 57 + (i * 5) % 12, 85) for i in range(16)]
    score(track("Tempo", 40, tempo_notes), tempos=((0, 120.0), (4, 90.0), (8, 140.0), (12, 60.0))).dump_midi(
        HERE / "tempo_changes.mid"
    )

    score(track("Silent", 0, [])).dump_midi(HERE / "empty.mid")
    pedal_tail().dump_midi(HERE / "pedal_tail.mid")

    data = (HERE / "single_track.mid").read_bytes()
    (HERE / "corrupt.mid").write_bytes(data[:40] + b"\xff\x00garbage")
    zero = bytearray(data)
    zero[12:14] = (0).to_bytes(2, "big")
    (HERE / "zero_tpq.mid").write_bytes(bytes(zero))


if __name__ == "__main__":
    main()
