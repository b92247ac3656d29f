"""Hostile uploads: decompression and allocation bombs are refused with a 422 naming the problem, leave nothing
behind and do not grow the server; an ABC file of several tunes lists them and the user picks the one to use."""

import pytest

from bombs import abc_of_tunes, many_member_zip, midi_note_bomb, midi_span_bomb, mxl_bomb, peak_rss_growth_mib
from conftest import corpus_path
from web.conftest import api_token, csrf, wait_job


def _tunes(count: int) -> bytes:
    """The first ``count`` tunes of a real Essen folk song file."""
    text = corpus_path("essenFolksong/altdeu10").read_text(encoding="utf-8")
    return "\n\n".join(text.split("\n\n")[:count]).encode()


def _herzog_ernst() -> str:
    return corpus_path("essenFolksong/altdeu10").read_text(encoding="utf-8").split("\n\n")[1]


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        (
            "score.mxl",
            lambda: mxl_bomb(400),
            "score.xml would unpack to 400.0 MiB, more than the 32.0 MiB limit",
        ),
        ("crowded.mxl", lambda: many_member_zip(4000), "the ZIP archive has 4001 members, more than 64"),
        ("notes.mid", lambda: midi_note_bomb(80_000), "too many notes (80000 > 50000)"),
        ("span.mid", midi_span_bomb, "the piece spans 559241 quarter notes, more than 50000"),
        (
            "many.abc",
            lambda: abc_of_tunes(_herzog_ernst(), 1001).encode(),
            "holds 1001 tunes, more than 1000",
        ),
    ],
)
def test_bombs_are_refused_naming_the_problem_without_growing_the_server(
    client, settings, name, make, message
):
    data = make()
    assert len(data) < settings.max_upload_mb * 2**20  # small enough to be sent: the bomb is in what it holds
    h = api_token(client)
    growth, r = peak_rss_growth_mib(
        lambda: client.post("/api/v1/uploads", files={"file": (name, data)}, headers=h)
    )
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert growth < 300, f"the server grew by {growth:.0f} MiB refusing {name}"
    assert client.get("/api/v1/uploads").json()["uploads"] == []
    assert [p for p in (settings.var_dir / "receive").rglob("*") if p.is_file()] == []


def test_abc_upload_lists_its_tunes_and_jobs_use_the_one_picked(client):
    h = api_token(client)
    r = client.post("/api/v1/uploads", files={"file": ("folk.abc", _tunes(5))}, headers=h)
    assert r.status_code == 201, r.text
    up = r.json()
    assert [t["number"] for t in up["meta"]["tunes"]] == ["1", "2", "3", "4", "5"]
    assert up["meta"]["tunes"][0]["title"] == "Das Hildebrandslied" and up["meta"]["tune"] == "1"

    picked = client.post(
        "/api/v1/uploads", files={"file": ("folk.abc", _tunes(5))}, data={"tune": "5"}, headers=h
    )
    assert picked.json()["meta"]["tune"] == "5" and picked.json()["meta"]["notes"] != up["meta"]["notes"]
    r = client.post("/api/v1/uploads", files={"file": ("folk.abc", _tunes(5))}, data={"tune": "9"}, headers=h)
    assert (
        r.status_code == 422 and "the file has no tune X:9; its tunes are 1, 2, 3, 4, 5" in r.json()["detail"]
    )

    page = client.get(f"/uploads/{up['id']}").text
    assert "This ABC file holds 5 tunes" in page and "<strong>X:1 Das Hildebrandslied</strong>" in page
    assert f'href="/uploads/{up["id"]}?tune=5">X:5 Der Graf von Rom' in page
    page = client.get(f"/uploads/{up['id']}?tune=5").text
    assert "<strong>X:5 Der Graf von Rom" in page and 'name="source_tune" value="5"' in page
    missing = client.get(f"/uploads/{up['id']}?tune=9")
    assert missing.status_code == 422 and "has no tune X:9" in missing.text

    body = {"operation": "continue", "source_upload": up["id"], "primer_bars": 2, "bars": 2, "seed": 1}
    r = client.post("/api/v1/jobs", json={**body, "source_tune": "9"}, headers=h)
    assert r.status_code == 422 and "has no tune X:9; its tunes are 1, 2, 3, 4, 5" in r.json()["detail"]
    r = client.post("/api/v1/jobs", json={**body, "source_tune": "5"}, headers=h)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done" and job["params"]["source_tune"] == "5", job


def test_the_upload_form_picks_a_tune_on_the_page(client):
    page = client.get("/upload").text
    assert "an ABC file of at most 1000 tunes" in page
    r = client.post(
        "/upload",
        data={"csrf_token": csrf(page)},
        files={"file": ("folk.abc", _tunes(3))},
        follow_redirects=False,
    )
    assert r.status_code == 303
    detail = client.get(r.headers["location"] + "?tune=2").text
    assert "<strong>X:2 Herzog Ernst</strong>" in detail and 'name="source_tune" value="2"' in detail
