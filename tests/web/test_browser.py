"""A real browser: Debian's Chromium, driven by Playwright (launched by executable path; Playwright's own browser
download cannot work here), against the app served by uvicorn on loopback. It generates a song through the
form, waits for the player, plays it, rates it, re-styles it from its keep-going panel (guidance and tries per bar)
and saves screenshots of both songs and the panel; uploads a chorale, plays it and continues it from its panel."""

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import music21
import pytest
import uvicorn

from museforge.data.formats import load_score
from museforge.web import create_app
from web.conftest import make_settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


@contextmanager
def chromium_page(errors: list[str]) -> Iterator:
    """A page of a fresh headless Chromium; the page's uncaught script errors are appended to ``errors``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page
        browser.close()


def upload_chorale(page, server: str, tmp_path: Path) -> None:
    """Upload Bach's four-part bwv66.6 as MIDI through the upload page and wait for the upload's page."""
    chorale = tmp_path / "bwv66.6.mid"
    load_score(music21.corpus.getWork("bach/bwv66.6")).dump_midi(str(chorale))
    page.goto(server + "/upload")
    page.set_input_files('input[name="file"]', str(chorale))
    page.click("form.card button.primary")
    page.wait_for_url("**/uploads/*", timeout=30_000)


@pytest.fixture
def server(tmp_path, models_folder):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(make_settings(tmp_path / "var", models_folder))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(30)


def test_generate_play_and_rate_in_chromium(server, tmp_path):
    errors = []
    with chromium_page(errors) as page:
        page.goto(server + "/")
        page.select_option("#model-select", "performance-rnn")
        assert page.is_hidden('fieldset[data-model="remi-transformer"]')
        page.select_option("#model-select", "remi-transformer")
        page.select_option('select[name="remi-transformer.style"]', "chorale")
        page.eval_on_selector(
            'input[name="remi-transformer.bars"]',
            "el => { el.value = 4; el.dispatchEvent(new Event('change')); }",
        )
        page.click('fieldset[data-model="remi-transformer"] details.barplan summary')
        assert page.locator('input[name="remi-transformer.rhythm"]').count() == 4  # one slider pair per bar
        page.click("#generate-button")
        page.wait_for_url("**/songs/*", timeout=60_000)
        page.wait_for_function("document.querySelector('#player').readyState >= 3", timeout=30_000)
        duration = page.evaluate("document.querySelector('#player').duration")
        assert duration > 1.0
        page.evaluate("document.querySelector('#player').play()")
        page.wait_for_function("document.querySelector('#player').currentTime > 0.3", timeout=15_000)
        assert page.locator("svg rect.note").count() > 0
        page.click('#rating button[value="4"]')
        page.wait_for_selector("#rating-summary:has-text('yours: 4')")
        shot = tmp_path / "song-page.png"
        page.screenshot(path=str(shot), full_page=True)
        # re-style the song from its one keep-going panel: the operation, then the model (the only one that
        # re-styles is chosen for us), busier, with guidance and two tries per bar under "More settings"
        first = page.url
        panel = page.locator("#keep-going")
        assert panel.locator('fieldset[data-model="remi-transformer"][data-op="continue"]').is_visible()
        panel.locator('input[name="operation"][value="restyle"]').check()
        assert page.input_value("#keep-model") == "musemorphose"
        assert panel.locator('option[value="remi-transformer"]').is_disabled()
        chosen = panel.locator('fieldset[data-model="musemorphose"][data-op="restyle"]')
        assert chosen.is_visible() and panel.locator("fieldset.op-controls:visible").count() == 1
        assert panel.locator("#keep-going-button").inner_text() == "Re-style with musemorphose"
        assert not chosen.locator('input[name="musemorphose.seed"]').is_visible()  # under "More settings"
        chosen.locator('input[name="musemorphose.rhythm_shift"]').fill("2")
        chosen.locator("details.more summary").click()
        chosen.locator('input[name="musemorphose.guidance"]').fill("2")
        chosen.locator('input[name="musemorphose.candidates"]').fill("2")
        panel_shot = tmp_path / "keep-going-panel.png"
        panel.screenshot(path=str(panel_shot))
        panel.locator("#keep-going-button").click()
        page.wait_for_function(
            f"location.href !== {first!r} && location.pathname.startsWith('/songs/')", timeout=120_000
        )
        assert page.locator("text=re-styled every bar, rhythm +2, polyphony +0, guidance 2").count() == 1
        page.wait_for_function("document.querySelector('#player').readyState >= 3", timeout=30_000)
        restyled = tmp_path / "restyled-page.png"
        page.screenshot(path=str(restyled), full_page=True)
    assert (
        shot.stat().st_size > 20_000
        and restyled.stat().st_size > 20_000
        and panel_shot.stat().st_size > 10_000
    )
    assert errors == []


def test_an_upload_plays_and_keeps_going_in_chromium(server, tmp_path):
    """Upload the four-part chorale through the page: it plays and shows its piano roll like a song; the panel
    switches between continue and re-style and continues it with the chosen model."""
    errors = []
    with chromium_page(errors) as page:
        upload_chorale(page, server, tmp_path)
        page.wait_for_function("document.querySelector('#player').readyState >= 3", timeout=60_000)
        assert page.evaluate("document.querySelector('#player').duration") > 10.0
        page.evaluate("document.querySelector('#player').play()")
        page.wait_for_function("document.querySelector('#player').currentTime > 0.3", timeout=15_000)
        assert page.locator(".pianoroll svg rect.note").count() > 100
        panel = page.locator("#keep-going")
        page.select_option("#keep-model", "performance-rnn")
        assert panel.locator('fieldset[data-model="performance-rnn"][data-op="continue"]').is_visible()
        assert panel.locator("#keep-going-button").inner_text() == "Continue with performance-rnn"
        page.select_option("#keep-model", "remi-transformer")
        chosen = panel.locator('fieldset[data-model="remi-transformer"][data-op="continue"]')
        chosen.locator('input[name="remi-transformer.primer_bars"]').fill("4")
        chosen.locator('input[name="remi-transformer.bars"]').evaluate("el => { el.value = 2; }")
        shot = tmp_path / "upload-page.png"
        page.screenshot(path=str(shot), full_page=True)
        panel.locator("#keep-going-button").click()
        page.wait_for_url("**/songs/*", timeout=120_000)
        assert page.locator("h1").inner_text() == "the first 4 bars of bwv66.6 + 2 bars (REMI Transformer)"
        assert page.locator("#made-from a").inner_text() == "bwv66.6"
    assert shot.stat().st_size > 20_000
    assert errors == []


def test_bars_picked_on_the_piano_roll_are_filled_in_in_chromium(server, tmp_path):
    """Upload the chorale, choose "Fill in", click bar 3 and shift-click bar 4 on its piano roll: the field reads
    3-4, the bars are shaded, and the fill-in is made and shown as a song with its piano roll."""
    errors = []
    with chromium_page(errors) as page:
        upload_chorale(page, server, tmp_path)
        panel = page.locator("#keep-going")
        panel.locator('input[name="operation"][value="infill"]').check()
        assert page.input_value("#keep-model") == "remi-transformer"
        field = panel.locator('fieldset[data-op="infill"] input[name="remi-transformer.infill"]')
        assert field.is_visible()

        def click_bar(number: int, **kw) -> None:
            x = page.evaluate(
                """n => { const svg = document.querySelector('.pianoroll svg');
                         const xs = [...svg.querySelectorAll('line.bar')].map(l => +l.getAttribute('x1'));
                         const p = new DOMPoint((xs[n - 1] + xs[n]) / 2, 60).matrixTransform(svg.getScreenCTM());
                         return [p.x, p.y]; }""",
                number,
            )
            page.mouse.click(x[0], x[1], **kw)

        click_bar(3)
        assert field.input_value() == "3"
        page.keyboard.down("Shift")
        click_bar(4)
        page.keyboard.up("Shift")
        assert field.input_value() == "3-4"
        assert page.locator(".pianoroll svg rect.picked").count() == 1
        shot = tmp_path / "picked-bars.png"
        page.screenshot(path=str(shot), full_page=True)
        panel.locator("#keep-going-button").click()
        page.wait_for_url("**/songs/*", timeout=120_000)
        assert page.locator(".pianoroll svg").count() == 1
    assert shot.stat().st_size > 20_000
    assert errors == []


def test_insights_and_my_taste_pages_in_chromium(server, tmp_path):
    """An operator signs up in the browser, is promoted, and sees the Insights charts drawn (two opposed groups
    of listeners: two taste clusters), filters them, fetches a CSV; then their My-taste page."""
    from museforge.store import open_repository
    from museforge.store.records import Event

    def plays(who, style, n, day):
        return [Event("play", who, at=(day + 0.5) * 86400, model="remi-transformer", style=style)] * n

    errors = []
    with chromium_page(errors) as page:
        page.goto(server + "/signup")
        page.fill('input[name="username"]', "opal")
        page.fill('input[name="password"]', "correct horse")
        page.click("button.primary")
        page.wait_for_url("**/history")
        assert page.goto(server + "/insights").status == 403
        repo = open_repository(tmp_path / "var")  # the server's own SQLite file
        user = repo.find_user(username="opal")
        repo.set_admin(user_id=user.id, admin=True)
        today = int(time.time() // 86400)
        events = plays(f"user:{user.id}", "chorale", 5, today)
        for i in range(4):
            events += plays(f"user:c{i}", "chorale", 6, today - i) + plays(f"user:f{i}", "folk", 6, today - i)
        repo.record_events(events=events)
        repo.close()
        page.goto(server + "/insights")
        assert page.locator("svg.chart").count() >= 6
        box = page.locator("#styles svg.chart").bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 40  # drawn, not just present
        assert page.locator("#styles svg.chart rect.bar").count() == 2
        assert page.inner_text("#cluster-count") == "2" and float(page.inner_text("#esteban-ray")) > 0
        shot = tmp_path / "insights-page.png"
        page.screenshot(path=str(shot), full_page=True)
        page.select_option('#insights-filters select[name="style"]', "folk")
        page.click("#insights-filters button")
        page.wait_for_url("**style=folk**")
        assert page.locator("table.styles-table td", has_text="chorale").count() == 0
        csv = page.request.get(server + page.locator("#styles a.csv").get_attribute("href"))
        assert csv.ok and csv.text().startswith("style,generations") and "folk" in csv.text()
        page.click('nav a[href="/taste"]')
        page.wait_for_selector("#my-entropy")
        assert page.inner_text("#my-entropy") == "0.00" and page.inner_text("#my-hhi") == "1.00"
        assert "chorale 100%" in page.inner_text("#my-cluster")
        taste = tmp_path / "taste-page.png"
        page.screenshot(path=str(taste), full_page=True)
    assert shot.stat().st_size > 20_000 and taste.stat().st_size > 10_000
    assert errors == []
