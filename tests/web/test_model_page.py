"""A model's page (/models/{name}): its description for a musician, what it can do, and its card rendered from
MODEL_CARD.md, with the card's raw HTML shown as text. The shipped models' descriptions say what each makes,
what it is good at and how long it takes, not how it was trained."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from museforge.families.serving import clear_model_cache
from museforge.models.zoo import CARD_FILE, ModelNotFoundError, models_dir
from museforge.web import create_app
from web.conftest import make_settings

CARD = """Writes short test pieces in two styles; takes about a second.

# remi-transformer

Family `transformer`. <script>alert("card")</script>

## Training
In short: 5 steps on two chorales.

| style | NLL |
|---|---|
| chorale | 0.457 |

<img src=x onerror=alert(1)> [a bad link](javascript:alert(1)) and [the corpus](https://web.mit.edu/music21/)
"""
JARGON = r"\b(steps?|epochs?|NLL|nats|parameters|WGAN|LSTM|VAE|GPU|H100|stages?|validation|tokens?)\b|\d+(\.\d+)? ?M\b"


@pytest.fixture
def carded(tmp_path, models_folder):
    """The shared test models with a card of the REMI model's own, holding a table and raw HTML."""
    root = tmp_path / "models"
    for model in models_folder.iterdir():
        if not model.is_dir():
            continue
        (root / model.name).mkdir(parents=True)
        for f in model.iterdir():
            if f.is_file() and f.name != CARD_FILE:
                (root / model.name / f.name).symlink_to(f)
    (root / "remi-transformer" / CARD_FILE).write_text(CARD, encoding="utf-8")
    clear_model_cache()
    with TestClient(create_app(make_settings(tmp_path / "var", root)), base_url="http://127.0.0.1") as c:
        yield c


def test_model_page_renders_its_card_and_escapes_raw_html(carded):
    r = carded.get("/models/remi-transformer")
    assert r.status_code == 200
    page = r.text
    lead = re.search(r'<p class="lead" id="model-description">(.*?)</p>', page).group(1)
    assert lead == "Writes short test pieces in two styles; takes about a second."
    card = page[page.index('id="model-card"') :]
    assert "<h2>Training</h2>" in card and "<table>" in card and "<td>0.457</td>" in card
    assert "remi-transformer</h1>" not in card  # the page's title is not repeated
    assert "<script>alert" not in page and "&lt;script&gt;" in card
    assert "<img" not in card and "&lt;img src=x onerror=alert(1)&gt;" in card
    assert 'href="javascript:' not in card and '<a href="https://web.mit.edu/music21/">the corpus</a>' in card
    assert "Continue" in page and 'href="/?model=remi-transformer"' in page

    home = carded.get("/?model=musemorphose").text
    assert '<option value="musemorphose" selected>' in home
    assert '<a href="/models/remi-transformer">About this model' in home


def test_a_model_without_a_card_and_an_unknown_model(carded):
    assert "This model ships no card." in carded.get("/models/performance-rnn").text
    r = carded.get("/models/no-such-model")
    assert r.status_code == 404 and "no model named &#39;no-such-model&#39;" in r.text
    assert carded.get("/models/..%2Fsecrets").status_code == 404


def shipped_cards() -> list[Path]:
    try:
        return sorted(models_dir().glob(f"*/{CARD_FILE}"))
    except ModelNotFoundError:  # not running from a checkout with its models folder
        return []


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda p: p.parent.name)
def test_shipped_descriptions_are_written_for_musicians(card):
    """The first line, shown in the form, says what the model makes and how long it takes, without training
    jargon; the training story stays in the card."""
    description, body = card.read_text(encoding="utf-8").split("\n", 1)
    assert not re.search(JARGON, description), description
    assert re.search(r"takes?|take about", description) and re.search(r"\d+ ?s\b|second", description)
    assert "\n## Training\nIn short: " in body
