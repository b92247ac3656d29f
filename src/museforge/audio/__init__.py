"""Audio for people to hear: SoundFont rendering of scores and WAV/FLAC/OGG/MP3 encoding."""

from museforge.audio.render import (
    AUDIO_FORMATS,
    default_soundfont,
    encode_audio,
    normalize_peak,
    render_score,
    render_to_file,
    write_audio,
)

__all__ = [
    "AUDIO_FORMATS",
    "default_soundfont",
    "encode_audio",
    "normalize_peak",
    "render_score",
    "render_to_file",
    "write_audio",
]
