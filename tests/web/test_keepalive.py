"""A queue worker's keepalive on the real embedded store: it keeps the jobs it holds alive, puts the silent
ones back on the queue, and a broker that refuses one job's message does not stop the others'."""

import time

from museforge.store import open_repository
from museforge.web.queue import BrokerUnavailable
from museforge.web.worker import STALE_BEATS, Keepalive

BEAT_S = 0.4  # stale after 2 s of silence: the margin for a loaded machine between a beat and the reaping


def test_held_jobs_stay_alive_and_silent_ones_go_back_even_when_the_broker_refuses_one(tmp_path):
    repo = open_repository(tmp_path)
    published, changed = [], []
    dead = [repo.create_job(owner="u", model="m", operation="generate", params={}) for _ in range(2)]
    mine = repo.create_job(owner="u", model="m", operation="generate", params={})

    def publish(job_id: str) -> None:
        if job_id == dead[0].id:
            raise BrokerUnavailable("the job queue's broker cannot be reached")
        published.append(job_id)

    keepalive = Keepalive(repo, BEAT_S, max_attempts=2, publish=publish, changed=changed.append)
    for job in dead:
        repo.claim_job_id(job_id=job.id, max_attempts=2, holder="a-killed-worker", stale_before=0.0)
    repo.claim_job_id(job_id=mine.id, max_attempts=2, holder=keepalive.holder, stale_before=0.0)
    with keepalive.holding(mine.id):
        time.sleep(STALE_BEATS * BEAT_S + 0.2)  # every heartbeat so far is stale
        keepalive.beat()
    assert [repo.get_job(job_id=j.id).status for j in dead] == ["queued", "queued"]
    assert published == [dead[1].id]  # the refused one waits for its unacknowledged message
    assert sorted(changed) == sorted(j.id for j in dead)
    assert repo.get_job(job_id=mine.id).status == "running"  # its holder beat for it
    time.sleep(STALE_BEATS * BEAT_S + 0.2)
    keepalive.beat()  # no longer held: silent, so it goes back too
    assert repo.get_job(job_id=mine.id).status == "queued" and published[-1] == mine.id
    repo.close()
