"""One contract for every repository backend: SQLite always, MongoDB when MUSEFORGE_TEST_MONGO_URI names a
server (none can be installed on the project's machines, so that run happens elsewhere)."""

import os
import threading
import time
import uuid

import pytest

from museforge.store import Conflict, FileStore, NotFound, Song, UnsafePath, Upload, new_id, open_repository
from museforge.store.repository import interrupted_reason

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
