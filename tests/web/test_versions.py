"""Model versions in the running app: a promotion and a rollback reach the next job without a restart, each
song records its version, and the model page and API list the versions with their gate reports."""

from fastapi.testclient import TestClient

from museforge.models.versions import Registry
from museforge.web import create_app
from web.conftest import api_token, finished_job

MODEL = "remi-transformer"
BODY = {"model": MODEL, "bars": 1, "seed": 3}


def _song_version(client, headers):
    job = finished_job(client, headers, BODY)
    return client.get(job["song_urls"][0]).json()["params"]["version"]


def test_promotion_and_rollback_reach_the_running_app(settings, models_folder):
    registry = Registry(settings.var_dir / "resource" / "registry", models_folder)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        headers = api_token(client)
        assert _song_version(client, headers) == 1

        candidate = registry.add(MODEL, models_folder / MODEL, parent=1, data={"styles": {"fiddle": 3}})
        registry.update(MODEL, candidate.number, gate={"reasons": [], "production": {"new_nll": 2.5},
                                                       "candidate": {"new_nll": 1.25}})  # fmt: skip
        assert _song_version(client, headers) == 1  # a candidate does not serve
        registry.promote(MODEL, candidate.number)
        assert _song_version(client, headers) == 2

        listed = client.get(f"/api/v1/models/{MODEL}/versions").json()
        assert listed["serving"] == 2 and [v["status"] for v in listed["versions"]] == [
            "production",
            "archived",
        ]
        page = client.get(f"/models/{MODEL}").text
        assert "v2" in page and "3 fiddle new" in page and "passed: new-music NLL 2.500 → 1.250" in page

        registry.rollback(MODEL)
        assert _song_version(client, headers) == 1
        assert client.get(f"/api/v1/models/{MODEL}/versions").json()["serving"] == 1
        assert client.get("/api/v1/models/nothing/versions").status_code == 404
