"""Sessions under clients that drop their cookie: an anonymous visitor writes no session to the store, expired
sessions are pruned, and the job rate limit holds per client address across sessions."""

import sqlite3
import time

from fastapi.testclient import TestClient

from museforge.store import DB_FILE
from museforge.web import create_app
from museforge.web.ratelimit import SlidingWindowLimiter, address_key
from museforge.web.security import COOKIE_NAME
from web.conftest import api_token, make_settings


def stored_sessions(settings) -> list[tuple]:
    """The sessions table as the database holds it (read directly, so nothing in the app can hide a row)."""
    with sqlite3.connect(settings.var_dir / DB_FILE) as db:
        return db.execute("SELECT id, user_id, created_at FROM sessions").fetchall()


def fresh(client: TestClient, address: str = "testclient") -> TestClient:
    """Another client of the same app with no cookie, from ``address``."""
    return TestClient(client.app, base_url="http://127.0.0.1", client=(address, 50000))


def test_cookieless_requests_store_no_session(client, settings):
    for _ in range(200):
        r = fresh(client).get("/api/v1/auth/session")
        assert r.status_code == 200 and COOKIE_NAME in r.cookies  # each still gets a session and a token
    assert stored_sessions(settings) == []


def test_an_anonymous_session_is_the_cookie_and_works_for_writes(client, settings):
    h = api_token(client)
    assert client.get("/api/v1/auth/session").json()["csrf_token"] == h["X-CSRF-Token"]  # stable
    assert "set-cookie" not in client.get("/api/v1/auth/session").headers  # the cookie is recognised
    r = client.post("/api/v1/songs/nosuchsong/rating", json={"value": 3}, headers=h)
    assert r.status_code == 404  # past the CSRF check
    other = fresh(client)
    assert other.post("/api/v1/songs/x/rating", json={"value": 3}, headers=h).status_code == 403
    assert stored_sessions(settings) == []


def test_sign_in_stores_a_session_and_logout_removes_it(client, settings):
    r = client.post(
        "/api/v1/auth/signup",
        json={"username": "dora", "password": "correct horse"},
        headers=api_token(client),
    )
    assert r.status_code == 201
    [(_, user_id, _)] = stored_sessions(settings)
    assert user_id is not None
    r = client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": r.json()["csrf_token"]})
    assert r.status_code == 200 and r.json()["user"] is None
    assert stored_sessions(settings) == []
    assert client.get("/api/v1/auth/session").json()["csrf_token"] == r.json()["csrf_token"]


def test_expired_sessions_are_pruned_at_start_and_at_sign_in(tmp_path, models_folder):
    settings = make_settings(tmp_path / "var", models_folder, session_max_age_s=3600)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        r = client.post(
            "/api/v1/auth/signup",
            json={"username": "eddie", "password": "correct horse"},
            headers=api_token(client),
        )
        assert r.status_code == 201, r.text
    [(kept, user_id, _)] = stored_sessions(settings)
    with sqlite3.connect(settings.var_dir / DB_FILE) as db:  # an abandoned session, two hours old
        db.execute(
            "INSERT INTO sessions (id, user_id, csrf, created_at) VALUES ('stale', ?, 'x', ?)",
            (user_id, time.time() - 7200),
        )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        assert [s[0] for s in stored_sessions(settings)] == [kept]  # pruned at start
        with sqlite3.connect(settings.var_dir / DB_FILE) as db:
            db.execute(
                "INSERT INTO sessions (id, user_id, csrf, created_at) VALUES ('stale', ?, 'x', ?)",
                (user_id, time.time() - 7200),
            )
        r = client.post(
            "/api/v1/auth/login",
            json={"username": "eddie", "password": "correct horse"},
            headers=api_token(client),
        )
        assert r.status_code == 200
        assert "stale" not in [s[0] for s in stored_sessions(settings)]  # pruned at sign-in


def test_dropping_the_cookie_does_not_reset_the_rate_limit(tmp_path, models_folder):
    settings = make_settings(
        tmp_path / "var",
        models_folder,
        rate_limit_jobs=2,
        rate_limit_address_jobs=3,
        rate_limit_window_s=3600,
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        answers = []
        for _ in range(6):  # a client that drops its cookie before every job
            visitor = fresh(client, "203.0.113.7")
            answers.append(visitor.post("/api/v1/jobs", json={"bars": 1}, headers=api_token(visitor)))
        assert [r.status_code for r in answers] == [202, 202, 202, 429, 429, 429]
        assert "at most 3 every 3600 s" in answers[-1].json()["detail"]
        assert 0 < int(answers[-1].headers["retry-after"]) <= 3600
        elsewhere = fresh(client, "198.51.100.9")  # another address has its own budget
        assert (
            elsewhere.post("/api/v1/jobs", json={"bars": 1}, headers=api_token(elsewhere)).status_code == 202
        )
        for _ in range(3):
            same_net = fresh(client, "2001:db8:1:2::10")
            same_net.post("/api/v1/jobs", json={"bars": 1}, headers=api_token(same_net))
        neighbour = fresh(client, "2001:db8:1:2:ffff::1")  # the same IPv6 /64
        assert (
            neighbour.post("/api/v1/jobs", json={"bars": 1}, headers=api_token(neighbour)).status_code == 429
        )


def test_address_keys_and_the_sliding_window():
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key(None) == "unknown" and address_key("testclient") == "testclient"
    limiter = SlidingWindowLimiter(2, 10.0)
    assert limiter.take("a", now=0.0) is None and limiter.take("a", now=1.0) is None
    assert limiter.take("a", now=2.0) == 8.0  # refused, and not counted
    assert limiter.take("b", now=2.0) is None
    assert limiter.take("a", now=10.0) is None  # the first event left the window
    assert limiter.take("a", now=10.5) == 0.5
    limiter.take("c", now=100.0)
    assert set(limiter._events) == {"c"}  # keys idle for a window are forgotten
