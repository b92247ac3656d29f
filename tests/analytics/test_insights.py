"""The Insights and My-taste figures on small event sets in the real SQLite store, computed by hand."""

import json
import math

import numpy as np
import pytest

from museforge.analytics.insights import (
    MIN_GROUP,
    Scope,
    insights,
    interest,
    listener_measures,
    my_taste,
    polarization,
    population_measures,
    table,
)
from museforge.analytics.report import insights_html, standalone, taste_html, to_csv
from museforge.store import open_repository
from museforge.store.records import Event

D0 = 20_000
DAY = 86400.0
SCOPE = Scope(D0, D0 + 7)


@pytest.fixture
def repo(tmp_path):
    r = open_repository(tmp_path)
    yield r
    r.close()


def ev(kind, who, *, day=D0, style="", model="remi", value=0):
    return Event(kind, who, at=(day + 0.5) * DAY, model=model, style=style, value=value)


def plays(who, style, n, **kw):
    return [ev("play", who, style=style, **kw) for _ in range(n)]


def test_a_chorale_only_listener_has_entropy_0_and_hhi_1(repo):
    repo.record_events(events=[*plays("user:a", "chorale", 4), *plays("user:b", "folk", 2),
                               *plays("user:b", "chorale", 2)])  # fmt: skip
    mine = my_taste(repo, "user:a", SCOPE)
    assert mine["measures"]["entropy"] == 0 and mine["measures"]["hhi"] == 1
    assert mine["profile"] == {"chorale": 4.0}
    other = my_taste(repo, "user:b", SCOPE)["measures"]
    assert other["entropy"] == pytest.approx(1) and other["hhi"] == pytest.approx(0.5)
    nobody = my_taste(repo, "user:new", SCOPE)
    assert nobody["profile"] == {} and nobody["measures"]["entropy"] is None and nobody["resembles"] is None


def test_interest_by_style_by_hand(repo):
    repo.record_events(events=[
        ev("generate", "a", style="chorale"), ev("generate", "a", style="chorale"), ev("generate", "b", style="folk"),
        *plays("a", "chorale", 4), ev("play_end", "a", style="chorale"), ev("play_end", "b", style="chorale"),
        ev("rate", "a", style="chorale", value=5), ev("rate", "b", style="chorale", value=2),
        ev("rate", "b", style="folk", value=4), ev("visit", "c"),
    ])  # fmt: skip
    rows = {r["style"]: r for r in interest(repo, SCOPE)}
    assert set(rows) == {"chorale", "folk"}  # visits concern no style
    c, f = rows["chorale"], rows["folk"]
    assert c["generation_share"] == pytest.approx(2 / 3) and f["generation_share"] == pytest.approx(1 / 3)
    assert (c["plays"], c["completion_rate"]) == (4, 0.5)
    assert (c["mean_rating"], c["like_share"]) == (3.5, 0.5)
    assert (f["mean_rating"], f["like_share"], f["completion_rate"]) == (4.0, 1.0, None)
    mine = {r["style"]: r for r in interest(repo, SCOPE, listener="b")}
    assert mine["chorale"]["generations"] == 0 and mine["chorale"]["mean_rating"] == 2.0


def _population(repo, groups):
    events = []
    for g, mix in enumerate(groups):
        for i in range(4):
            for style, n in mix.items():
                events += plays(f"user:{g}-{i}", style, n)
    repo.record_events(events=events)


def test_two_opposed_groups_are_more_polarized_than_one(repo, tmp_path):
    _population(repo, [{"chorale": 6}, {"folk": 6}])
    opposed = polarization(repo, SCOPE)
    assert len(opposed["clusters"]) == 2 and opposed["esteban_ray"] > 0
    assert {c["top_styles"] for c in opposed["clusters"]} == {"chorale 100%", "folk 100%"}
    one = open_repository(tmp_path / "one")
    _population(one, [{"chorale": 3, "folk": 3}, {"chorale": 3, "folk": 3}])
    together = polarization(one, SCOPE)
    one.close()
    assert len(together["clusters"]) == 1 and together["esteban_ray"] == 0
    assert opposed["esteban_ray"] > together["esteban_ray"]
    mine = my_taste(repo, "user:0-1", SCOPE)
    assert mine["resembles"]["top_styles"] == "chorale 100%" and mine["resembles"]["share"] == 0.5


def test_small_clusters_show_no_profile(repo):
    _population(repo, [{"chorale": 6}, {"folk": 6}])
    repo.record_events(events=plays("user:odd", "jig", 9))  # a listener alone with their taste
    rows = polarization(repo, SCOPE)["clusters"]
    alone = [c for c in rows if c["listeners"] is None]
    assert alone and all(c["profile"] is None and c["share"] is None for c in alone)
    assert all(c["listeners"] >= MIN_GROUP for c in rows if c["listeners"] is not None)
    assert all(c["profile"]["jig"] == 0 and "jig" not in c["top_styles"] for c in rows if c["profile"])
    assert my_taste(repo, "user:odd", SCOPE)["resembles"] is None


def test_activity_and_population_figures_name_no_listener(repo):
    repo.record_events(events=[
        ev("visit", "user:secret-a"), ev("visit", "user:secret-b"), ev("visit", "user:secret-a", day=D0 + 1),
        *plays("user:secret-a", "folk", 3), ev("generate", "anon:secret-c", style="folk", day=D0 + 2),
    ])  # fmt: skip
    f = insights(repo, SCOPE)
    daily = {r["day"]: r["active_listeners"] for r in f["activity"]["daily"]}
    assert daily == {"2024-10-04": 2, "2024-10-05": 1, "2024-10-06": 1}
    assert f["activity"]["retention"]["day_1"] == {"cohort": 3, "returned": 1, "rate": pytest.approx(1 / 3)}
    assert f["activity"]["jobs"] == [{"day": "2024-10-06", "model": "remi", "style": "folk", "jobs": 1}]
    text = json.dumps(f) + insights_html(f, csv_base="/insights/")
    assert "secret" not in text and "user:" not in text
    assert to_csv(table(f, "daily")).splitlines()[0] == "day,active_listeners,events"
    with pytest.raises(KeyError, match="no table"):
        table(f, "users")


def test_html_has_the_charts_and_escapes_names(repo):
    repo.record_events(events=plays("a", "<script>x</script>", 3) + plays("b", "folk", 3))
    f = insights(repo, SCOPE)
    page = standalone("museforge insights", insights_html(f))
    assert page.count("<svg") >= 5 and "<script>x" not in page and "&lt;script&gt;x" in page
    mine = taste_html(my_taste(repo, "a", SCOPE))
    assert mine.count("<svg") == 2 and 'id="my-entropy">0.00' in mine


def test_scopes_refuse_bad_ranges():
    with pytest.raises(ValueError, match="after its start"):
        Scope(D0, D0)
    assert math.isclose(Scope.last(30).until_day - Scope.last(30).since_day, 30)


def test_population_measures_match_the_per_listener_functions():
    rng = np.random.default_rng(1)
    interest = rng.integers(0, 4, (60, 5)).astype(float) * (rng.random((60, 1)) < 0.9)  # some with nothing
    ratings = rng.integers(0, 3, (60, 5)).astype(float)
    ratings[:5] = [[0, 0, 4, 0, 0], [2, 0, 0, 0, 2], [1, 1, 0, 0, 0], [0] * 5, [3, 0, 0, 0, 0]]
    together = population_measures(interest, ratings, 6)
    for i in range(60):
        alone = listener_measures(interest[i], ratings[i], 6)
        for name, values in together.items():
            expected = np.nan if alone[name] is None else alone[name]
            np.testing.assert_allclose(values[i], expected, rtol=1e-9, atol=1e-12, err_msg=f"{name} of {i}")
