"""An upload has a player like a song: its page plays the piece (rendered once, then kept) above its piano roll,
and only its owner can hear it."""

import io
import re

import music21
import soundfile

from web.conftest import csrf


def test_an_upload_page_plays_the_piece(client, settings):
    page = client.get("/upload").text
    with open(music21.corpus.getWork("bach/bwv66.6"), "rb") as fh:
        r = client.post("/upload", data={"csrf_token": csrf(page)}, files={"file": ("bwv66.6.mxl", fh)},
                        follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    upload_id = r.headers["location"].rsplit("/", 1)[1]
    detail = client.get(r.headers["location"]).text
    src = f"/api/v1/uploads/{upload_id}/audio.ogg"
    assert re.search(rf'<audio id="player" controls preload="auto" src="{src}"></audio>\s*<div class="pianoroll">',
                     detail)  # fmt: skip
    assert detail.count('class="note"') > 100  # the four parts in the piano roll
    upload = client.get(f"/api/v1/uploads/{upload_id}").json()
    assert upload["audio"] == src

    audio = client.get(src)
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/ogg"
    samples, rate = soundfile.read(io.BytesIO(audio.content))
    seconds, piece = len(samples) / rate, upload["meta"]["duration_s"]
    assert piece < seconds < piece + 3  # the piece and its ring-out
    assert abs(samples).max() > 0.05
    kept = settings.var_dir / "result" / "uploads" / upload_id / "audio.ogg"
    made = kept.stat().st_mtime_ns
    assert client.get(src).content == audio.content and kept.stat().st_mtime_ns == made  # rendered once, kept

    client.cookies.clear()  # another visitor: someone else's upload cannot be heard
    assert client.get(src).status_code == 404
