"""One contract for every repository backend: SQLite always, MongoDB when MUSEFORGE_TEST_MONGO_URI names a
server (none can be installed on the project's machines, so that run happens elsewhere)."""

import os
import threading
import time
import uuid

import pytest

from museforge.store import Conflict, FileStore, NotFound, Song, UnsafePath, Upload, new_id, open_repository
from museforge.store.records import Feedback
from museforge.store.repository import interrupted_reason, lost_worker_reason

MONGO_URI = os.environ.get("MUSEFORGE_TEST_MONGO_URI")


@pytest.fixture(params=["sqlite", "mongo"])
def repo(request, tmp_path):
    if request.param == "sqlite":
        r = open_repository(tmp_path)
        yield r
        r.close()
        return
    if not MONGO_URI:
        pytest.skip(
            "MUSEFORGE_TEST_MONGO_URI is not set (no MongoDB server can be installed on this machine)"
        )
    name = f"museforge_test_{uuid.uuid4().hex[:12]}"
    r = open_repository(tmp_path, mongo_uri=MONGO_URI, mongo_db=name)
    yield r
    r.client.drop_database(name)
    r.close()


def _song(owner, job_id, **kw):
    return Song(
        id=new_id(), owner=owner, job_id=job_id, model="m", title="t", params={"bars": 4},
        meta={"notes": 10}, files={"midi": "result/x/song.mid"}, originality={"near_copy": False}, **kw,
    )  # fmt: skip


def test_users_are_unique_case_insensitively(repo):
    user = repo.create_user(username="Ada", password_hash="h")
    assert repo.get_user(user_id=user.id).username == "Ada"
    assert repo.find_user(username="ada").id == user.id
    with pytest.raises(Conflict, match="taken"):
        repo.create_user(username="ADA", password_hash="x")
    assert repo.find_user(username="nobody") is None


def test_sessions_and_owner_transfer(repo):
    anon = repo.create_session()
    assert anon.user_id is None and anon.owner == f"anon:{anon.id}" and len(anon.csrf) >= 32
    user = repo.create_user(username="bo", password_hash="h")
    job = repo.create_job(owner=anon.owner, model="m", operation="generate", params={})
    repo.claim_job()
    song = _song(anon.owner, job.id)
    repo.finish_job(job_id=job.id, songs=[song])
    repo.rate_song(song_id=song.id, owner=anon.owner, value=4)
    repo.create_upload(upload=Upload(new_id(), anon.owner, "a.mid", "midi", "receive/a.mid", 3, "00"))
    repo.transfer_owner(old=anon.owner, new=f"user:{user.id}")
    assert repo.list_songs(owner=anon.owner) == [] and repo.list_uploads(owner=anon.owner) == []
    assert [s.id for s in repo.list_songs(owner=f"user:{user.id}")] == [song.id]
    assert repo.list_jobs(owner=f"user:{user.id}")[0].id == job.id
    assert repo.get_rating(song_id=song.id, owner=f"user:{user.id}").mine == 4
    logged = repo.create_session(user_id=user.id)
    assert repo.get_session(session_id=logged.id).owner == f"user:{user.id}"
    repo.delete_session(session_id=logged.id)
    assert repo.get_session(session_id=logged.id) is None


def test_expired_sessions_are_pruned(repo):
    user = repo.create_user(username="pru", password_hash="h")
    anon, signed_in = repo.create_session(), repo.create_session(user_id=user.id)
    newest = max(anon.created_at, signed_in.created_at)
    assert repo.prune_sessions(created_before=anon.created_at) == 0  # strictly before: nothing yet
    assert repo.get_session(session_id=anon.id) is not None
    assert repo.prune_sessions(created_before=newest + 1) == 2
    assert repo.get_session(session_id=anon.id) is None and repo.get_session(session_id=signed_in.id) is None
    assert repo.prune_sessions(created_before=newest + 1) == 0
    assert repo.get_user(user_id=user.id) is not None  # the account stays


def test_job_lifecycle_claims_each_job_once(repo):
    jobs = [repo.create_job(owner="u", model="m", operation="generate", params={"i": i}) for i in range(6)]
    assert repo.get_job(job_id=jobs[0].id).status == "queued"
    claimed, lock = [], threading.Lock()

    def worker():
        while (job := repo.claim_job()) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j.id for j in jobs)  # every job once, none twice
    assert [j.params["i"] for j in repo.list_jobs(owner="u")] == [5, 4, 3, 2, 1, 0]
    job = repo.get_job(job_id=jobs[0].id)
    assert job.status == "running" and job.attempts == 1 and job.started_at is not None
    repo.set_progress(job_id=job.id, progress=0.5)
    assert repo.get_job(job_id=job.id).progress == 0.5
    songs = [_song("u", job.id), _song("u", job.id)]
    done = repo.finish_job(job_id=job.id, songs=songs)
    assert done.status == "done" and done.song_ids == [s.id for s in songs] and done.progress == 1.0
    assert repo.get_song(song_id=songs[0].id).params == {"bars": 4}
    with pytest.raises(NotFound):  # a job that is not running cannot be finished twice
        repo.finish_job(job_id=job.id, songs=[_song("u", job.id)])
    kept = repo.fail_job(job_id=job.id, error="a second run failed")  # a done job keeps its songs
    assert kept.status == "done" and kept.error is None and kept.song_ids == [s.id for s in songs]
    assert len(repo.list_songs(owner="u")) == 2
    failed = repo.fail_job(job_id=jobs[1].id, error="bad primer")
    assert failed.status == "failed" and failed.error == "bad primer"
    repo.requeue_job(job_id=jobs[2].id)
    assert repo.get_job(job_id=jobs[2].id).status == "queued"
    assert repo.count_jobs_since(owner="u", since=time.time() - 60) == 6
    assert repo.count_jobs_since(owner="u", since=time.time() + 1) == 0


def test_recover_requeues_or_fails_running_jobs(repo):
    a = repo.create_job(owner="u", model="m", operation="generate", params={})
    b = repo.create_job(owner="u", model="m", operation="generate", params={})
    repo.claim_job()
    repo.claim_job()
    repo.requeue_job(job_id=b.id)
    repo.claim_job()  # b's second attempt
    requeued, failed = repo.recover_jobs(max_attempts=2)
    assert requeued == [a.id] and failed == [b.id]
    assert repo.get_job(job_id=a.id).status == "queued"
    assert repo.get_job(job_id=b.id).error == interrupted_reason(2)


def claim(repo, job_id, holder="w1", max_attempts=2, alive_since=None):
    """Claim as a queue worker would, a job counting as alive when it beat at or after ``alive_since``."""
    stale_before = time.time() - 60 if alive_since is None else alive_since
    return repo.claim_job_id(
        job_id=job_id, max_attempts=max_attempts, holder=holder, stale_before=stale_before
    )


def test_claim_by_id_takes_over_a_dead_workers_job_until_attempts_run_out(repo):
    job = repo.create_job(owner="u", model="m", operation="generate", params={})
    other = repo.create_job(owner="u", model="m", operation="generate", params={})
    first = claim(repo, job.id)
    assert first.id == job.id and first.status == "running" and first.attempts == 1
    assert first.holder == "w1" and first.heartbeat_at >= first.started_at
    assert repo.get_job(job_id=other.id).status == "queued"  # only the delivered job moves
    assert claim(repo, job.id, holder="w2") is None  # delivered twice while w1 is alive: not run twice
    assert repo.get_job(job_id=job.id).holder == "w1"
    dead = time.time() + 1  # every heartbeat so far is older: w1 died
    again = claim(repo, job.id, holder="w2", alive_since=dead)
    assert again.attempts == 2 and again.status == "running" and again.holder == "w2"
    assert claim(repo, job.id, holder="w3", alive_since=time.time() + 1) is None  # w2 died too: given up
    failed = repo.get_job(job_id=job.id)
    assert failed.status == "failed" and failed.error == lost_worker_reason(2)
    assert claim(repo, job.id, max_attempts=5, alive_since=time.time() + 1) is None  # failed stays failed
    claim(repo, other.id)
    repo.finish_job(job_id=other.id, songs=[_song("u", other.id)])
    assert claim(repo, other.id, alive_since=time.time() + 1) is None  # done: a repeated delivery
    assert repo.get_job(job_id=other.id).status == "done"
    assert claim(repo, "nope") is None


def test_heartbeats_keep_a_workers_jobs_and_the_silent_ones_are_reaped(repo):
    alive, silent, embedded = (
        repo.create_job(owner="u", model="m", operation="generate", params={}) for _ in range(3)
    )
    claim(repo, alive.id, holder="w1")
    claim(repo, silent.id, holder="w2")
    repo.claim_job()  # the embedded queue's job: no holder, no heartbeat, never reaped
    time.sleep(0.01)
    cut = time.time()
    time.sleep(0.01)
    repo.beat_jobs(job_ids=[alive.id, silent.id], holder="w1")  # w1 cannot keep w2's job alive
    assert repo.get_job(job_id=alive.id).heartbeat_at > cut
    assert repo.get_job(job_id=silent.id).heartbeat_at < cut
    assert repo.reap_jobs(stale_before=cut, max_attempts=2) == ([silent.id], [])
    back = repo.get_job(job_id=silent.id)
    assert (back.status, back.holder, back.heartbeat_at, back.attempts) == ("queued", None, None, 1)
    assert repo.get_job(job_id=alive.id).status == "running"
    assert repo.get_job(job_id=embedded.id).status == "running"
    retaken = claim(repo, silent.id, holder="w3")
    assert retaken.attempts == 2 and retaken.holder == "w3"
    assert repo.reap_jobs(stale_before=time.time() + 1, max_attempts=2) == ([alive.id], [silent.id])
    assert repo.get_job(job_id=silent.id).error == lost_worker_reason(2)
    assert repo.get_job(job_id=embedded.id).status == "running"
    assert repo.reap_jobs(stale_before=time.time() + 1, max_attempts=2) == ([], [])  # once only


def test_two_reapers_at_once_requeue_a_job_once(repo):
    jobs = [repo.create_job(owner="u", model="m", operation="generate", params={}) for _ in range(20)]
    for job in jobs:
        claim(repo, job.id, holder="dead")
    results, start = [], threading.Barrier(4)

    def reap():
        start.wait()
        results.append(repo.reap_jobs(stale_before=time.time() + 1, max_attempts=2))

    threads = [threading.Thread(target=reap) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    requeued = [job_id for r, _ in results for job_id in r]
    assert sorted(requeued) == sorted(j.id for j in jobs)  # each exactly once


def test_songs_share_tokens_and_files(repo):
    job = repo.create_job(owner="u", model="m", operation="generate", params={})
    repo.claim_job()
    song = _song("u", job.id)
    repo.finish_job(job_id=job.id, songs=[song])
    repo.set_share_token(song_id=song.id, share_token="tok1")
    assert repo.get_shared_song(share_token="tok1").id == song.id
    other_job = repo.create_job(owner="v", model="m", operation="generate", params={})
    repo.claim_job()
    other = _song("v", other_job.id)
    repo.finish_job(job_id=other_job.id, songs=[other])
    with pytest.raises(Conflict):
        repo.set_share_token(song_id=other.id, share_token="tok1")
    repo.set_share_token(song_id=song.id, share_token=None)
    assert repo.get_shared_song(share_token="tok1") is None
    repo.add_song_file(song_id=song.id, kind="wav", path="result/x/audio.wav")
    assert repo.get_song(song_id=song.id).files == {"midi": "result/x/song.mid", "wav": "result/x/audio.wav"}
    with pytest.raises(NotFound):
        repo.set_share_token(song_id="missing", share_token="t")


def test_ratings_one_per_owner(repo):
    job = repo.create_job(owner="u", model="m", operation="generate", params={})
    repo.claim_job()
    song = _song("u", job.id)
    repo.finish_job(job_id=job.id, songs=[song])
    assert repo.rate_song(song_id=song.id, owner="u", value=5).to_dict() == {
        "mean": 5.0,
        "count": 1,
        "mine": 5,
    }
    repo.rate_song(song_id=song.id, owner="u", value=3)  # replaces, does not add
    rating = repo.rate_song(song_id=song.id, owner="v", value=4)
    assert (rating.mean, rating.count, rating.mine) == (3.5, 2, 4)
    assert repo.get_rating(song_id=song.id, owner=None).mine is None
    with pytest.raises(ValueError, match="1 to 5"):
        repo.rate_song(song_id=song.id, owner="u", value=6)
    with pytest.raises(NotFound):
        repo.rate_song(song_id="missing", owner="u", value=3)


def test_feedback_is_kept_per_listener_and_version_and_follows_a_sign_in(repo):
    job = repo.create_job(owner="u", model="m", operation="generate", params={})
    repo.claim_job()
    a, b = _song("u", job.id), _song("u", job.id)
    repo.finish_job(job_id=job.id, songs=[a, b])
    request = {"style": "folk", "bars": 4}
    signals = [
        Feedback("rate", "anon:x", a.id, "m", 1, request, value=5, at=10.0),
        Feedback("skip", "anon:x", b.id, "m", 1, request, at=11.0),
        Feedback("like", "user:v", a.id, "m", 2, request, at=12.0),
        Feedback("play_end", "user:v", b.id, "other", 1, {}, at=13.0),
    ]
    for f in signals:
        repo.record_feedback(feedback=f)
    assert repo.list_feedback(model="m") == signals[:3]  # oldest first, the model's only
    assert repo.list_feedback(model="m", version=1) == signals[:2]
    assert repo.list_feedback(model="m", listener="user:v") == [signals[2]]  # another's are not seen
    assert repo.list_feedback(model="m", limit=2) == signals[1:3]  # the newest, still oldest first
    repo.transfer_owner(old="anon:x", new="user:v")
    assert [f.listener for f in repo.list_feedback(model="m")] == ["user:v"] * 3
    with pytest.raises(NotFound):
        repo.record_feedback(feedback=Feedback("like", "u", "missing", "m", 1, {}))
    with pytest.raises(ValueError, match="unknown feedback kind"):
        Feedback("love", "u", a.id, "m", 1, {})
    with pytest.raises(ValueError, match="1 to 5"):
        Feedback("rate", "u", a.id, "m", 1, {}, value=0)


def test_uploads_and_models(repo):
    up = Upload(new_id(), "u", "tune.abc", "abc", "receive/x.abc", 120, "ab" * 32, {"notes": 40})
    repo.create_upload(upload=up)
    assert repo.get_upload(upload_id=up.id) == up
    assert repo.list_uploads(owner="v") == []
    from museforge.store import ModelRecord

    repo.upsert_model(model=ModelRecord("b", "transformer", {"styles": ["folk"]}))
    repo.upsert_model(model=ModelRecord("a", "performance_rnn", {}))
    repo.upsert_model(model=ModelRecord("b", "transformer", {"styles": ["jig"]}))
    assert [(m.name, m.info) for m in repo.list_models()] == [("a", {}), ("b", {"styles": ["jig"]})]


def test_file_store_stays_inside_var(tmp_path):
    files = FileStore(tmp_path / "var")
    rel = files.relative("result", "abc", "song.mid")
    files.write(rel, b"MThd")
    assert files.read(rel) == b"MThd" and sorted(p.name for p in (tmp_path / "var").iterdir()) == [
        "receive", "resource", "result",
    ]  # fmt: skip
    for bad in ("../etc/passwd", "/etc/passwd", "result/../../x"):
        with pytest.raises(UnsafePath):
            files.resolve(bad)
    for part in ("..", "a/b", ".hidden", ""):
        with pytest.raises(UnsafePath):
            files.relative("result", part)
    with pytest.raises(UnsafePath):
        files.relative("elsewhere", "x")
    assert not list((tmp_path / "var" / "result" / "abc").glob("*.tmp"))


# ---- activity events: the analytics contract ----

DAY = 86400.0
D0 = 20_000  # a Friday (day 0, 1970-01-01, was a Thursday): its week began on Monday, day 19_996


def _ev(kind, who, day, *, style="", model="m", value=0, hour=12):
    from museforge.store.records import Event

    return Event(kind, who, at=(day + hour / 24) * DAY, model=model, style=style, value=value)


def _events():
    """a: 2 chorale plays, 1 folk play, rates 5 and 1; b: 3 chorale generations; c: visits two days later."""
    return [
        _ev("play", "a", D0, style="chorale"), _ev("play", "a", D0, style="chorale"),
        _ev("play", "a", D0 + 1, style="folk", model="n"),
        _ev("rate", "a", D0 + 1, style="chorale", value=5), _ev("rate", "a", D0 + 1, style="folk", value=1),
        *[_ev("generate", "b", D0 + 2, style="chorale") for _ in range(3)],
        _ev("visit", "c", D0 + 2), _ev("visit", "c", D0 + 4),
    ]  # fmt: skip


def _figures(repo):
    """Every event measure the store answers, on the fixture's days."""
    return {
        "by_style_kind": repo.count_events(by=("style", "kind")),
        "by_week": repo.count_events(by=("week",), since_day=D0 - 7, until_day=D0 + 7),
        "by_listener_value": repo.count_events(by=("listener", "value"), kinds=("rate",)),
        "listeners": [
            repo.count_listeners(by=("day",)),
            repo.count_listeners(by=("style",), kinds=("play",)),
        ],
        "total": repo.count_events(by=()),
        "folk_n": repo.count_events(by=("day",), model="n", style="folk"),
        "a": repo.count_events(by=("kind",), listener="a", since_day=D0 + 1),
        "retention": [repo.retention(since_day=D0, until_day=D0 + 6, after_days=k) for k in (1, 2, 7)],
    }


def test_events_are_counted_in_the_database(repo):
    repo.record_events(events=_events())
    rows = {(r["style"], r["kind"]): r["n"] for r in repo.count_events(by=("style", "kind"))}
    assert rows == {
        ("", "visit"): 2, ("chorale", "generate"): 3, ("chorale", "play"): 2, ("chorale", "rate"): 1,
        ("folk", "play"): 1, ("folk", "rate"): 1,
    }  # fmt: skip
    [total] = repo.count_events(by=())
    assert (total["n"], total["value_sum"]) == (10, 6)
    weeks = repo.count_events(by=("week",))
    assert [(w["week"], w["n"]) for w in weeks] == [(19_996, 9), (20_003, 1)]  # D0+3 is the next Monday
    ratings = repo.count_events(by=("listener", "value"), kinds=("rate",))
    assert [(r["listener"], r["value"], r["n"]) for r in ratings] == [("a", 1, 1), ("a", 5, 1)]
    assert [r["n"] for r in repo.count_events(by=("day",), since_day=D0 + 1, until_day=D0 + 2)] == [3]
    assert [r["n"] for r in repo.count_events(by=("day",), model="n", style="folk")] == [1]
    assert repo.count_events(by=("kind",), kinds=("share",)) == []
    assert repo.count_events(by=()) != [] and repo.count_events(by=(), listener="nobody") == []
    with pytest.raises(ValueError, match="cannot group"):
        repo.count_events(by=("title; DROP TABLE events",))


def test_distinct_listeners_are_counted_in_the_database(repo):
    repo.record_events(events=_events())
    assert repo.count_listeners(by=()) == [{"listeners": 3}]
    per_day = repo.count_listeners(by=("day",))
    assert [(r["day"], r["listeners"]) for r in per_day] == [(D0, 1), (D0 + 1, 1), (D0 + 2, 2), (D0 + 4, 1)]
    assert [r["listeners"] for r in repo.count_listeners(by=("week",))] == [3, 1]
    styles = repo.count_listeners(by=("style",), kinds=("play", "generate"))
    assert [(r["style"], r["listeners"]) for r in styles] == [("chorale", 2), ("folk", 1)]
    assert repo.count_listeners(by=("day",), style="folk") == [{"day": D0 + 1, "listeners": 1}]
    assert repo.count_listeners(by=(), kinds=("share",)) == []
    with pytest.raises(ValueError, match="cannot group"):
        repo.count_listeners(by=("listener",))


def test_retention_counts_listeners_who_come_back(repo):
    repo.record_events(events=_events())
    # first days: a D0 (last D0+1), b D0+2 (last D0+2), c D0+2 (last D0+4); the range ends at D0+6
    assert repo.retention(since_day=D0, until_day=D0 + 6, after_days=1) == (3, 2)  # a and c came back
    assert repo.retention(since_day=D0, until_day=D0 + 6, after_days=2) == (3, 1)  # c, two days later
    assert repo.retention(since_day=D0, until_day=D0 + 6, after_days=7) == (0, 0)  # no one had a week
    assert repo.retention(since_day=D0 + 1, until_day=D0 + 6, after_days=1) == (2, 1)  # a began before


def test_rollups_keep_every_figure(repo):
    repo.record_events(events=_events())
    before = _figures(repo)
    assert repo.rollup_events(before_day=D0 + 2) == 5  # a's five events
    assert _figures(repo) == before
    repo.record_events(events=[_ev("play", "a", D0, style="chorale")])  # a late event of a rolled-up day
    assert repo.rollup_events(before_day=D0 + 5) == 6
    assert repo.count_events(by=("kind",), kinds=("play",), listener="a")[0]["n"] == 4
    assert repo.rollup_events(before_day=D0 + 5) == 0


def test_job_stats_success_and_latency(repo):
    jobs = [repo.create_job(owner="u", model="m", operation="generate", params={"style": s})
            for s in ("folk", "folk", "folk", "chorale")]  # fmt: skip
    for _ in jobs:
        repo.claim_job()
    for job in jobs[:3]:
        time.sleep(0.02)  # distinct latencies, milliseconds apart
        repo.finish_job(job_id=job.id, songs=[])
    repo.fail_job(job_id=jobs[3].id, error="x")
    latencies = sorted(
        j.finished_at - j.started_at for j in (repo.get_job(job_id=job.id) for job in jobs[:3])
    )
    stats = repo.job_stats()
    assert (stats["total"], stats["done"], stats["failed"]) == (4, 3, 1)
    # nearest rank among 3: p50 -> 2nd, p90 and p99 -> 3rd
    expected = {0.5: latencies[1], 0.9: latencies[2], 0.99: latencies[2]}
    assert stats["latency"] == pytest.approx(expected, abs=0.0005)  # to the millisecond
    chorale = repo.job_stats(style="chorale")
    assert (chorale["total"], chorale["failed"], chorale["latency"][0.5]) == (1, 1, None)
    assert repo.job_stats(model="other")["total"] == 0
    today = int(time.time() // DAY)
    assert (
        repo.job_stats(since_day=today + 1)["total"] == 0
        and repo.job_stats(until_day=today + 1)["total"] == 4
    )


def test_admins_and_moving_events_on_sign_in(repo):
    user = repo.create_user(username="op", password_hash="h")
    assert repo.get_user(user_id=user.id).is_admin is False
    repo.set_admin(user_id=user.id, admin=True)
    assert repo.find_user(username="op").is_admin is True
    with pytest.raises(NotFound):
        repo.set_admin(user_id="missing", admin=True)
    me = f"user:{user.id}"
    repo.record_events(
        events=[_ev("play", "anon:s", D0), _ev("play", me, D0), _ev("visit", "anon:s", D0 + 1)]
    )
    repo.transfer_owner(old="anon:s", new=me)
    assert [(r["listener"], r["n"]) for r in repo.count_events(by=("listener",))] == [(me, 3)]
    assert [r["n"] for r in repo.count_events(by=("kind",), kinds=("play",), listener=me)] == [2]
    assert repo.count_listeners(by=()) == [{"listeners": 1}]
    assert repo.retention(since_day=D0, until_day=D0 + 3, after_days=1) == (1, 1)


def test_learning_from_an_upload_is_off_until_its_owner_says_so_and_can_be_withdrawn(repo):
    first, second = (
        Upload(new_id(), "anon:a", f"{n}.mid", "midi", f"receive/{n}.mid", 3, "00") for n in "xy"
    )
    repo.create_upload(upload=first)
    time.sleep(0.01)
    repo.create_upload(upload=second)
    assert repo.get_upload(upload_id=first.id).learn is False and repo.list_learning_uploads() == []

    chosen = repo.set_upload_learn(upload_id=second.id, learn=True, style="folk")
    repo.set_upload_learn(upload_id=first.id, learn=True)
    assert chosen.learn and chosen.meta["learn_style"] == "folk" and chosen.meta["learn_changed_at"] > 0
    assert [u.id for u in repo.list_learning_uploads()] == [first.id, second.id]  # oldest first
    assert repo.get_upload(upload_id=second.id).meta["learn_style"] == "folk"

    repo.transfer_owner(old="anon:a", new="user:b")  # signing in keeps the choice
    assert {u.owner for u in repo.list_learning_uploads()} == {"user:b"}
    withdrawn = repo.set_upload_learn(upload_id=second.id, learn=False, style="folk")
    assert not withdrawn.learn and "learn_style" not in withdrawn.meta
    assert [u.id for u in repo.list_learning_uploads()] == [first.id]
    with pytest.raises(NotFound):
        repo.set_upload_learn(upload_id="missing", learn=True)


def test_an_old_database_gains_the_learning_choice(tmp_path):
    import sqlite3

    from museforge.store.sqlite import SqliteRepository

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:  # the uploads table as it was before the choice existed
        old.execute(
            "CREATE TABLE uploads (id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, kind TEXT NOT "
            "NULL, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, sha256 TEXT NOT NULL, meta TEXT NOT NULL, "
            "created_at REAL NOT NULL)"
        )
        old.execute(
            "INSERT INTO uploads VALUES ('u1', 'anon:a', 'a.mid', 'midi', 'receive/a.mid', 3, '00', '{}', 1.0)"
        )
    repo = SqliteRepository(path)
    try:
        assert repo.get_upload(upload_id="u1").learn is False
        assert (
            repo.set_upload_learn(upload_id="u1", learn=True).learn and len(repo.list_learning_uploads()) == 1
        )
    finally:
        repo.close()
