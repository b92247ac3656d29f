"""Analytics on the web: events are noted where they happen, and only admins see population figures, only
a signed-in listener sees their own, anonymous visitors see nothing."""

import json

from fastapi.testclient import TestClient

from conftest import FIXTURES
from web.conftest import api_token, finished_job

ADMIN_ROUTES = [
    "/api/v1/analytics/insights", "/api/v1/analytics/activity", "/api/v1/analytics/interest?by=model",
    "/api/v1/analytics/polarization", "/api/v1/analytics/tables/styles.csv", "/insights", "/insights/daily.csv",
]  # fmt: skip
MEMBER_ROUTES = ["/api/v1/analytics/me", "/taste"]


def signup(client, name):
    r = client.post(
        "/api/v1/auth/signup", json={"username": name, "password": "correct horse"}, headers=api_token(client)
    )
    assert r.status_code == 201, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}, r.json()["user"]["id"]


def flushed(client):
    services = client.app.state.services
    services.events.flush()
    return services.repo


def test_events_are_noted_where_they_happen(client):
    h, user_id = signup(client, "ada")
    job = finished_job(client, h, {"style": "chorale", "bars": 1, "seed": 3})
    song_id = job["song_ids"][0]
    assert client.post(f"/api/v1/songs/{song_id}/rating", json={"value": 5}, headers=h).status_code == 200
    assert client.post(f"/api/v1/songs/{song_id}/share", headers=h).status_code == 200
    assert client.get(f"/api/v1/songs/{song_id}/midi").status_code == 200
    assert client.get(f"/api/v1/songs/{song_id}/audio.ogg").status_code == 200  # the player: no download
    for kind in ("play", "play_end"):
        r = client.post("/api/v1/analytics/events", json={"kind": kind, "song_id": song_id}, headers=h)
        assert r.status_code == 204, r.text
    with open(FIXTURES / "single_track.mid", "rb") as fh:
        assert client.post("/api/v1/uploads", files={"file": ("a.mid", fh)}, headers=h).status_code == 201
    assert client.get(f"/songs/{song_id}").status_code == 200
    repo = flushed(client)
    me = f"user:{user_id}"
    kinds = {r["kind"]: r["n"] for r in repo.count_events(by=("kind",), listener=me)}
    assert kinds == {"signup": 1, "generate": 1, "rate": 1, "share": 1, "download": 1, "play": 1,
                     "play_end": 1, "upload": 1, "visit": 1}  # fmt: skip
    songs = repo.count_events(by=("kind", "model", "style", "value"), listener=me, kinds=("generate", "rate"))
    assert [(r["kind"], r["model"], r["style"], r["value"]) for r in songs] == [
        ("generate", "remi-transformer", "chorale", 0), ("rate", "remi-transformer", "chorale", 5),
    ]  # fmt: skip


def test_clients_that_drop_their_cookie_write_no_visits(client):
    before = sum(r["n"] for r in flushed(client).count_events(by=("kind",), kinds=("visit",)))
    for _ in range(30):
        client.cookies.clear()
        assert client.get("/").status_code == 200
    assert client.get("/").status_code == 200  # the 30th visitor kept its cookie: its second page counts
    after = sum(r["n"] for r in flushed(client).count_events(by=("kind",), kinds=("visit",)))
    assert after - before == 1


def test_plays_need_csrf_and_a_song_the_visitor_may_hear(client):
    h, _ = signup(client, "bea")
    song_id = finished_job(client, h, {"bars": 1, "seed": 1})["song_ids"][0]
    other = TestClient(client.app, base_url="http://127.0.0.1")
    body = {"kind": "play", "song_id": song_id}
    assert other.post("/api/v1/analytics/events", json=body).status_code == 403  # no CSRF header
    assert other.post("/api/v1/analytics/events", json=body, headers=api_token(other)).status_code == 404
    assert client.post("/api/v1/analytics/events", json={**body, "kind": "buy"}, headers=h).status_code == 422
    token = client.post(f"/api/v1/songs/{song_id}/share", headers=h).json()["share_token"]
    shared = {**body, "share": token}
    assert other.post("/api/v1/analytics/events", json=shared, headers=api_token(other)).status_code == 204


def test_access_to_every_analytics_route(client):
    anonymous = TestClient(client.app, base_url="http://127.0.0.1")
    for url in ADMIN_ROUTES + MEMBER_ROUTES:
        assert anonymous.get(url).status_code == 403, url
    _, user_id = signup(client, "cleo")
    for url in ADMIN_ROUTES:
        assert client.get(url).status_code == 403, url
    for url in MEMBER_ROUTES:
        assert client.get(url).status_code == 200, url
    client.app.state.services.repo.set_admin(user_id=user_id, admin=True)
    for url in ADMIN_ROUTES + MEMBER_ROUTES:
        assert client.get(url).status_code == 200, url
    assert client.get("/api/v1/analytics/tables/users.csv").status_code == 404
    assert client.get("/insights?since=2026-13-01").status_code == 422
    r = client.get("/api/v1/analytics/activity?since=2026-02-01&until=2026-01-01")
    assert r.status_code == 422 and "after its start" in r.json()["detail"]


def test_admin_figures_name_no_listener_and_a_listener_sees_only_their_own(client):
    ha, a_id = signup(client, "dora")
    song = finished_job(client, ha, {"style": "chorale", "bars": 1, "seed": 2})["song_ids"][0]
    for _ in range(3):
        client.post("/api/v1/analytics/events", json={"kind": "play", "song_id": song}, headers=ha)
    eve = TestClient(client.app, base_url="http://127.0.0.1")
    he, e_id = signup(eve, "zephyrine")
    eve_song = finished_job(eve, he, {"style": "folk", "bars": 1, "seed": 4})["song_ids"][0]
    eve.post("/api/v1/analytics/events", json={"kind": "play", "song_id": eve_song}, headers=he)
    flushed(client)
    mine = client.get("/api/v1/analytics/me", params={"listener": f"user:{e_id}"}).json()
    assert mine["profile"] == {"chorale": 4.0}  # a generation and three plays; eve's folk is not there
    assert mine["measures"]["entropy"] == 0 and mine["measures"]["hhi"] == 1
    assert eve.get("/api/v1/analytics/me").json()["profile"] == {"folk": 2.0}
    client.app.state.services.repo.set_admin(user_id=a_id, admin=True)
    figures = client.get("/api/v1/analytics/insights").json()
    assert figures["activity"]["jobs_total"] == 2 and figures["activity"]["success_rate"] == 1.0
    styles = {r["style"]: r for r in figures["styles"]}
    assert styles["chorale"]["plays"] == 3 and styles["folk"]["generation_share"] == 0.5
    page = client.get("/insights").text
    everything = json.dumps(figures) + page + client.get("/insights/jobs.csv").text
    for secret in (a_id, e_id, "zephyrine", song, eve_song):
        assert secret not in everything.replace('<span class="who">dora</span>', ""), secret
    assert page.count("<svg") >= 5 and 'href="/insights"' in page
    csv = client.get("/insights/styles.csv?days=7")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("style,generations,generation_share,plays")
