"""An upload's owner lets museforge learn from it, or withdraws it: through the API and the pages, into the lab's
received data and out again."""

from conftest import FIXTURES
from museforge.data.build import BuildOptions, build_dataset, limit_per_collection
from museforge.data.corpora import music21_units
from museforge.data.manifest import load_manifest
from museforge.lab.receive import ingest, upload_arrivals
from web.conftest import api_token, csrf, upload

MELODY = (FIXTURES / "single_track.mid").read_bytes()


def test_off_unless_ticked_changeable_and_only_by_its_owner(client):
    headers = api_token(client)
    plain = upload(client, headers, "melody.mid", MELODY)
    assert plain["learn"] is False
    r = client.post("/api/v1/uploads", files={"file": ("m.mid", MELODY)}, data={"learn": "true", "style": "folk"},
                    headers=headers)  # fmt: skip
    assert r.status_code == 201 and r.json()["learn"] is True and r.json()["meta"]["learn_style"] == "folk"

    url = f"/api/v1/uploads/{plain['id']}"
    changed = client.patch(url, json={"learn": True, "style": "chorale"}, headers=headers)
    assert (
        changed.status_code == 200
        and changed.json()["learn"]
        and changed.json()["meta"]["learn_style"] == "chorale"
    )
    withdrawn = client.patch(url, json={"learn": False}, headers=headers).json()
    assert withdrawn["learn"] is False and "learn_style" not in withdrawn["meta"]

    bad = client.patch(url, json={"learn": True, "style": "polka"}, headers=headers)
    assert bad.status_code == 422 and "unknown style 'polka'" in bad.text and "chorale" in bad.text
    assert client.patch(url, json={"learn": "maybe"}, headers=headers).status_code == 422
    assert client.patch(url, json={"learn": True}).status_code == 403  # no CSRF token
    refused = client.post("/api/v1/uploads", files={"file": ("m.mid", MELODY)}, data={"learn": "true",
                          "style": "polka"}, headers=headers)  # fmt: skip
    assert (
        refused.status_code == 422 and len(client.get("/api/v1/uploads").json()["uploads"]) == 2
    )  # not stored

    client.cookies.clear()  # another visitor
    assert client.patch(url, json={"learn": True}, headers=api_token(client)).status_code == 404


def test_the_pages_offer_the_choice_and_show_it(client):
    page = client.get("/upload").text
    assert 'name="learn"' in page and "checked" not in page and '<option value="folk">' in page
    form = {"csrf_token": csrf(page), "learn": "true", "style": "folk"}
    r = client.post("/upload", files={"file": ("m.mid", MELODY)}, data=form, follow_redirects=False)
    assert r.status_code == 303
    detail = client.get(r.headers["location"]).text
    assert (
        "museforge may learn from this piece (as folk)" in detail
        and '<option value="folk" selected>' in detail
    )
    back = client.post(
        r.headers["location"] + "/learn", data={"csrf_token": csrf(detail)}, follow_redirects=False
    )  # unticked
    assert back.status_code == 303 and "museforge does not learn from this piece." in client.get(back.headers[
        "location"]).text  # fmt: skip


def test_a_consented_upload_reaches_the_lab_and_leaves_it_when_withdrawn(client, settings, tmp_path):
    corpus = tmp_path / "corpus"
    build_dataset(
        limit_per_collection(music21_units(["bach"]), 3), corpus, BuildOptions(workers=1, progress=False)
    )
    headers = api_token(client)
    mine = upload(client, headers, "melody.mid", MELODY)
    repo, var = client.app.state.services.repo, settings.var_dir.resolve()
    received = tmp_path / "received"
    assert ingest(upload_arrivals(var, repo.list_learning_uploads()), received, [corpus]).pieces == 0

    client.patch(f"/api/v1/uploads/{mine['id']}", json={"learn": True, "style": "folk"}, headers=headers)
    report = ingest(upload_arrivals(var, repo.list_learning_uploads()), received, [corpus])
    assert len(report.accepted) == 1 and [r.style for r in load_manifest(received)] == ["folk"]
    assert load_manifest(received)[0].source == f"upload/{mine['id']}"

    client.patch(f"/api/v1/uploads/{mine['id']}", json={"learn": False}, headers=headers)
    gone = ingest(upload_arrivals(var, repo.list_learning_uploads()), received, [corpus])
    assert gone.withdrawn == report.accepted and load_manifest(received) == []
