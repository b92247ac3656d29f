"""A song's page has one "keep going" panel: pick an operation, then a model that does it, then that pair's
settings, the less used ones (seed, temperature, guidance...) under "More settings". Only the chosen pair's
fields are enabled, so only they are sent; the API lists which controls each operation takes."""

import re

from web.conftest import api_token, csrf, finished_job, wait_job


def fieldsets(panel: str) -> dict[tuple[str, str], tuple[bool, str]]:
    """(model, operation) -> (enabled, the fieldset's HTML)."""
    found = re.findall(
        r'<fieldset class="op-controls" data-model="([^"]+)" data-op="(\w+)"( hidden disabled)?>(.*?)</fieldset>\s*'
        r'(?=<fieldset class="op-controls"|<button)',
        panel,
        re.S,
    )
    return {(model, op): (not off, body) for model, op, off, body in found}


def test_the_song_page_has_one_panel_operation_then_model(client):
    h = api_token(client)
    done = finished_job(client, h, {"model": "remi-transformer", "style": "chorale", "bars": 2, "seed": 1})
    song_id = done["song_ids"][0]
    page = client.get(f"/songs/{song_id}").text
    assert page.count('action="/generate"') == 1  # one form, not one per model and operation
    panel = page[page.index('id="keep-going"') : page.index("</form>", page.index('id="keep-going"'))]
    assert re.findall(r'name="operation" value="(\w+)"', panel) == ["continue", "infill", "restyle"]
    options = dict(re.findall(r'<option value="([^"]+)" data-ops="([^"]+)"', panel))
    assert options == {
        "musemorphose": "continue restyle",
        "performance-rnn": "continue",
        "remi-transformer": "continue infill",
    }
    pairs = fieldsets(panel)
    assert set(pairs) == {("musemorphose", "continue"), ("musemorphose", "restyle"),
                          ("performance-rnn", "continue"), ("remi-transformer", "continue"),
                          ("remi-transformer", "infill")}  # fmt: skip
    assert [pair for pair, (on, _) in pairs.items() if on] == [
        ("remi-transformer", "continue")
    ]  # the default
    assert 'id="keep-going-button">Continue with remi-transformer</button>' in page
    for (model, _), (_, body) in pairs.items():
        main = body.split('<details class="more">')[0]  # the fields shown at once
        for advanced in ("seed", "temperature", "top_p", "guidance", "candidates"):
            assert f'name="{model}.{advanced}"' not in main
    restyle = pairs[("musemorphose", "restyle")][1]
    assert restyle.index("musemorphose.rhythm_shift") < restyle.index('<details class="more">')
    assert 'name="musemorphose.seed"' in restyle.split('<details class="more">')[1]
    assert 'placeholder="all bars, or e.g. 5-8"' in restyle

    # the panel's continue: keep the song's first bar and add two
    form = {"csrf_token": csrf(page), "source_song": song_id, "operation": "continue", "model": "remi-transformer",
            "remi-transformer.bars": "2", "remi-transformer.primer_bars": "1", "remi-transformer.seed": ""}  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    more = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert more["status"] == "done", more
    song = client.get(more["song_urls"][0]).json()
    assert song["params"]["primer_bars_used"] == 1
    assert song["title"] == "the first 1 bar of Chorale, 2 bars, seed 1 + 2 bars (REMI Transformer)"


def test_models_list_the_controls_of_each_operation(client):
    models = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    ops = {o["name"]: o["controls"] for o in models["musemorphose"]["operations"]}
    assert ops["restyle"] == ["style", "candidates", "rhythm_shift", "polyphony_shift", "guidance", "restyle_bars",
                              "parts", "seed", "key", "tempo", "instruments"]  # fmt: skip
    assert ops["continue"][:3] == ["style", "bars", "primer_bars"] and "rhythm_shift" not in ops["continue"]
    perf = {o["name"]: o["controls"] for o in models["performance-rnn"]["operations"]}
    assert perf["continue"] == ["seconds", "density", "pitch_classes", "temperature", "top_p", "seed", "key",
                                "tempo", "instruments"]  # fmt: skip


def test_the_panel_fills_in_bars_of_a_song_and_keeps_the_others(client):
    h = api_token(client)
    done = finished_job(client, h, {"model": "remi-transformer", "style": "chorale", "bars": 4, "seed": 2})
    song_id = done["song_ids"][0]
    page = client.get(f"/songs/{song_id}").text
    panel = page[page.index('id="keep-going"') : page.index("</form>", page.index('id="keep-going"'))]
    infill = fieldsets(panel)[("remi-transformer", "infill")][1]
    assert 'name="remi-transformer.infill"' in infill.split('<details class="more">')[0]
    form = {"csrf_token": csrf(page), "source_song": song_id, "operation": "infill", "model": "remi-transformer",
            "remi-transformer.infill": "2-3", "remi-transformer.seed": "5"}  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    job = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert job["status"] == "done", job
    song = client.get(job["song_urls"][0]).json()
    assert song["params"]["infill"] == "2-3" and song["params"]["bars"] == 2
    assert song["title"] == "Chorale, 4 bars, seed 2, bars 2-3 filled in (REMI Transformer)"
    assert client.get(f"/songs/{song['id']}").status_code == 200

    too_far = {**form, "remi-transformer.infill": "9-10"}
    r = client.post("/api/v1/jobs", headers=h, json={"model": "remi-transformer", "operation": "infill",
                                                     "infill": "9-10", "source_song": song_id})  # fmt: skip
    assert r.status_code == 422 and "the piece has 4 bars" in r.text, (too_far, r.text)
