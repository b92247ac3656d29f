"""Piano-roll pictures of a `symusic.Score` as self-contained SVG, for pages and reports.

The SVG uses presentation attributes only (no ``<style>`` element), so it can be inlined in an HTML page without
its rules leaking onto the page, or served as a file. Time runs on x in ticks (so bars line up with the bar lines
from `museforge.score.bar_starts`), pitch on y over the range the pitched tracks use; drum hits sit in their own
lane below, one row per drum sound, drawn as short marks instead of pitched bars.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import numpy as np
import symusic

from museforge.score import bar_starts, end_tick, note_array

# Colour-blind-friendly qualitative palette (Okabe–Ito, then Tableau's extras), one colour per pitched track.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#D55E00",
    "#56B4E9",
    "#8C564B",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
)
DRUM_COLOUR = "#333333"
_BLACK_KEYS = {1, 3, 6, 8, 10}
_NAMES = ("C", "C♯", "D", "D♯", "E", "F", "F♯", "G", "G♯", "A", "A♯", "B")
_MARGIN_PITCHES = 2  # empty rows above and below the used pitch range, so edge notes do not touch the frame


def _pitch_name(pitch: int) -> str:
    return f"{_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _track_label(score: symusic.Score, index: int) -> str:
    track = score.tracks[index]
    name = track.name.strip()
    if name:
        return name
    return "Drums" if track.is_drum else f"Track {index + 1}"


def pianoroll_svg(score: symusic.Score, width: int = 960, height: int = 360, title: str | None = None) -> str:
    """Draw ``score`` as an SVG piano roll of ``width`` × ``height`` pixels (one ``<rect>`` per note).

    Notes carry ``class="note"`` (pitched) or ``class="drum"``, bar lines ``class="bar"``, so pages and tests can
    find them. A legend names each track that has notes, in its colour.
    """
    if width < 200 or height < 120:
        raise ValueError(f"a piano roll needs at least 200 × 120 pixels, got {width} × {height}")
    notes = note_array(score)
    pitched = notes[~notes["is_drum"]]
    drums = notes[notes["is_drum"]]
    used_tracks = sorted({int(t) for t in notes["track"]})
    colours: dict[int, str] = {}
    for track in used_tracks:
        colours[track] = DRUM_COLOUR if score.tracks[track].is_drum else PALETTE[len(colours) % len(PALETTE)]

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(title or 'Piano roll')}</title>",
        f'<rect class="background" x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]

    # Layout: legend row on top, pitch labels on the left, bar numbers below the roll.
    left, right, top, bottom = 44, 8, 26, 18
    plot_w, plot_h = width - left - right, height - top - bottom
    if len(notes) == 0:
        out.append(
            f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" fill="#666666">no notes</text>'
        )
        out.append("</svg>")
        return "\n".join(out)

    drum_keys = sorted({int(p) for p in drums["pitch"]})
    if len(pitched):
        low = max(0, int(pitched["pitch"].min()) - _MARGIN_PITCHES)
        high = min(127, int(pitched["pitch"].max()) + _MARGIN_PITCHES)
    else:
        low, high = 0, -1
    n_pitch_rows = high - low + 1
    # Drum rows are as tall as pitch rows, so a hit reads at the same scale as a note.
    total_rows = n_pitch_rows + len(drum_keys)
    row_h = plot_h / max(total_rows, 1)
    drum_top = top + n_pitch_rows * row_h
    stop = max(end_tick(score), 1)
    x_scale = plot_w / stop

    def x_of(tick: np.ndarray | float) -> np.ndarray | float:
        return left + tick * x_scale

    # Pitch background: shaded black-key rows and a label on every C, as on a keyboard.
    out.append('<g class="keys">')
    for pitch in range(low, high + 1):
        y = top + (high - pitch) * row_h
        if pitch % 12 in _BLACK_KEYS:
            out.append(f'<rect x="{left}" y="{y:.2f}" width="{plot_w}" height="{row_h:.2f}" fill="#f2f2f2"/>')
        if pitch % 12 == 0:
            out.append(
                f'<text x="{left - 4}" y="{y + row_h / 2:.2f}" text-anchor="end" dominant-baseline="middle" '
                f'fill="#555555">{_pitch_name(pitch)}</text>'
            )
    if drum_keys:
        out.append(
            f'<rect x="{left}" y="{drum_top:.2f}" width="{plot_w}" height="{len(drum_keys) * row_h:.2f}" '
            'fill="#ececec"/>'
        )
        out.append(
            f'<text x="{left - 4}" y="{drum_top + len(drum_keys) * row_h / 2:.2f}" text-anchor="end" '
            'dominant-baseline="middle" fill="#555555">drums</text>'
        )
    out.append("</g>")

    # Bar lines, with a bar number wherever there is room for one.
    bars = bar_starts(score)
    bar_px = plot_w / max(len(bars), 1)
    label_every = max(1, int(np.ceil(28 / max(bar_px, 1e-9))))
    out.append(f'<g class="bars" stroke="#bbbbbb" stroke-width="1" data-right="{left + plot_w:.2f}">')
    for number, tick in enumerate(bars.tolist()):
        x = x_of(tick)
        out.append(f'<line class="bar" x1="{x:.2f}" y1="{top}" x2="{x:.2f}" y2="{top + plot_h}"/>')
        if number % label_every == 0:
            out.append(
                f'<text x="{x + 2:.2f}" y="{top + plot_h + 12}" fill="#777777" stroke="none">{number + 1}</text>'
            )
    out.append("</g>")

    # Pitched notes, one group per track so a page can restyle or hide a track.
    note_h = max(row_h - 1.0, 1.0) if row_h > 3 else row_h
    for track in used_tracks:
        if score.tracks[track].is_drum:
            continue
        sel = pitched[pitched["track"] == track]
        xs = x_of(sel["time"].astype(np.float64))
        ws = np.maximum(sel["duration"] * x_scale - 1.0, 1.0)  # a 1 px gap keeps repeated notes apart
        ys = top + (high - sel["pitch"].astype(np.float64)) * row_h + (row_h - note_h) / 2
        opacity = 0.55 + 0.45 * sel["velocity"] / 127.0
        out.append(f'<g fill="{colours[track]}">')
        out.extend(
            f'<rect class="note" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{note_h:.2f}" '
            f'fill-opacity="{o:.2f}"/>'
            for x, y, w, o in zip(xs.tolist(), ys.tolist(), ws.tolist(), opacity.tolist(), strict=True)
        )
        out.append("</g>")

    # Drum hits: fixed-width marks in the drum lane (their MIDI "pitch" names a sound, not a height).
    if len(drums):
        row_of = {key: i for i, key in enumerate(drum_keys)}
        hit_w = max(2.0, min(6.0, row_h))
        xs = x_of(drums["time"].astype(np.float64))
        ys = drum_top + np.array([row_of[int(p)] for p in drums["pitch"]], dtype=np.float64) * row_h
        out.append(f'<g fill="{DRUM_COLOUR}">')
        out.extend(
            f'<rect class="drum" x="{x:.2f}" y="{y:.2f}" width="{hit_w:.2f}" height="{note_h:.2f}" rx="1"/>'
            for x, y in zip(xs.tolist(), ys.tolist(), strict=True)
        )
        out.append("</g>")

    out.append(
        f'<rect class="frame" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999999"/>'
    )

    # Legend: a swatch and the name of every track with notes, left to right along the top.
    out.append('<g class="legend">')
    x = float(left)
    for shown, track in enumerate(used_tracks):
        label = _track_label(score, track)
        if x + 24 + 6.5 * len(label) > width - right:
            out.append(f'<text x="{x:.1f}" y="17" fill="#333333">+{len(used_tracks) - shown} more</text>')
            break
        out.append(f'<rect class="swatch" x="{x:.1f}" y="8" width="10" height="10" fill="{colours[track]}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="17" fill="#333333">{escape(label)}</text>')
        x += 24 + 6.5 * len(label)
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
