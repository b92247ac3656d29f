"""`museforge users` and `museforge analytics` on a real SQLite store in a temporary var folder."""

import json
import time

from typer.testing import CliRunner

from museforge.cli import app
from museforge.store import open_repository
from museforge.store.records import Event
from museforge.web.security import verify_password

runner = CliRunner()


def test_users_create_and_promote(tmp_path):
    var = ["--var", str(tmp_path)]
    r = runner.invoke(app, ["users", "create", "opal", "--admin", *var], input="long enough\nlong enough\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["users", "create", "ruby", *var], input="long enough\nlong enough\n")
    assert r.exit_code == 0, r.output
    repo = open_repository(tmp_path)
    assert repo.find_user(username="opal").is_admin and not repo.find_user(username="ruby").is_admin
    assert verify_password(repo.find_user(username="ruby").password_hash, "long enough")
    assert runner.invoke(app, ["users", "promote", "ruby", *var]).exit_code == 0
    assert repo.find_user(username="ruby").is_admin
    assert runner.invoke(app, ["users", "promote", "opal", "--demote", *var]).exit_code == 0
    assert not repo.find_user(username="opal").is_admin
    repo.close()
    r = runner.invoke(app, ["users", "promote", "nobody", *var])
    assert r.exit_code == 2 and "no user 'nobody'" in r.output
    r = runner.invoke(app, ["users", "create", "opal", *var], input="long enough\nlong enough\n")
    assert r.exit_code == 2 and "taken" in r.output
    r = runner.invoke(app, ["users", "create", "x", *var], input="long enough\nlong enough\n")
    assert r.exit_code == 2 and "3 to 32" in r.output


def test_analytics_report_and_rollup(tmp_path):
    repo = open_repository(tmp_path)
    today = int(time.time() // 86400)
    old = [Event("play", "user:a", at=(today - 40) * 86400.0, model="m", style="jig")]
    recent = [Event("play", f"user:{w}", at=(today - 1) * 86400.0, model="m", style=s)
              for w, s in (("a", "jig"), ("b", "reel"), ("c", "reel")) for _ in range(3)]  # fmt: skip
    repo.record_events(events=old + recent)
    repo.close()
    out = tmp_path / "report.html"
    r = runner.invoke(
        app, ["analytics", "report", "--since", "4w", "--out", str(out), "--json", "--var", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert "3 listeners" in r.output
    html = out.read_text()
    assert html.startswith("<!doctype html>") and html.count("<svg") >= 5
    assert not any(external in html for external in ("<link", "<script", "src="))  # self-contained
    figures = json.loads(out.with_suffix(".json").read_text())
    assert {s["style"]: s["plays"] for s in figures["styles"]} == {"jig": 3, "reel": 6}  # 40 days ago: out
    r = runner.invoke(app, ["analytics", "rollup", "--older-than", "30d", "--var", str(tmp_path)])
    assert r.exit_code == 0 and "rolled up 1 raw events" in r.output
    r = runner.invoke(
        app, ["analytics", "report", "--since", "8w", "--out", str(out), "--json", "--var", str(tmp_path)]
    )
    assert {s["style"]: s["plays"] for s in json.loads(out.with_suffix(".json").read_text())["styles"]} == {
        "jig": 4, "reel": 6,
    }  # fmt: skip
    r = runner.invoke(app, ["analytics", "report", "--since", "soon", "--var", str(tmp_path)])
    assert r.exit_code == 2 and "30d or 4w" in r.output
