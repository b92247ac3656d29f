"""`lab prefer` over songs the tiny REMI model made and a scripted listener judged: the preference set is read
from the store, a candidate is tuned and gated with reasons, and the feedback rules and gates on their own."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from lab.conftest import GATE, MODEL, PERFORMANCE
from museforge.cli import app
from museforge.families.serving import clear_model_cache, generate_song, get_model
from museforge.lab.cycle import Lab
from museforge.lab.feedback import Judged, held_out, pairs, request_key, utilities
from museforge.lab.prefer import (
    PREFER_LOG,
    Example,
    PreferOptions,
    prefer,
    preference_reasons,
    transposed_examples,
)
from museforge.models.zoo import MODELS_DIR_ENV, locate_model, registry
from museforge.store import FileStore, Song, open_repository
from museforge.store.records import Feedback
from museforge.training.preference import PreferenceItem, ScoredSequence, reference_log_probs

pytestmark = pytest.mark.xdist_group("lab_cycle")
GATE_PREFER = GATE.__class__(**{**GATE.to_dict(), "nll_tolerance": 0.05})


REMI_REQUESTS = ({"style": "chorale", "bars": 2}, {"style": "folk", "bars": 2})


def _made(lab, repo, files, seeds, requests=REMI_REQUESTS, listener="user:panel"):
    """Songs of the production version for each request, named by request and seed (so the held-out split is
    the same on every machine); the listener gives the even seeds 5 stars and the odd ones 1 (a taste that
    does not hang on how one machine rounds the sampling)."""
    loaded = get_model(lab.model)
    songs = []
    for i, request in enumerate(requests):
        for seed in seeds:
            (made,) = generate_song(loaded, **request, seed=seed)
            job = repo.create_job(owner=listener, model=lab.model, operation="generate", params={})
            repo.claim_job()
            song_id = f"{i}-{seed}"
            kept = files.relative("result", song_id, "tokens.json")
            files.write(kept, json.dumps(made.kept_tokens()).encode())
            song = Song(song_id, listener, job.id, lab.model, "t", made.params, {}, {"tokens": kept})
            repo.finish_job(job_id=job.id, songs=[song])
            songs.append((song, seed))
    for song, seed in songs:
        stars = 5 if seed % 2 == 0 else 1
        repo.record_feedback(feedback=Feedback("rate", listener, song.id, lab.model, song.params.get("version"),
                                               song.params, value=stars))  # fmt: skip
    return songs


@pytest.mark.parametrize("method", ["kto", "dpo"])
def test_prefer_tunes_and_gates_a_candidate_from_the_stores_feedback(lab, method):
    repo = open_repository(lab.var)
    _made(lab, repo, FileStore(lab.var), range(12))
    options = PreferOptions(method=method, max_steps=6, batch_size=4, min_examples=4, heldout_share=0.3,
                            gate=GATE_PREFER)  # fmt: skip
    result = prefer(lab, repo, options, log=lambda _: None)
    repo.close()

    assert result["examples"]["method"] == method and result["examples"]["train"] >= 4
    assert result["decision"] in ("promoted", "rejected") and result["candidate"] == 2
    version = registry().get(MODEL, 2)
    assert version.parent == 1 and version.data["feedback"] == result["examples"]
    for side in ("production", "candidate"):
        figures = result["metrics"][side]
        assert 0 <= figures["preference_accuracy"] <= 1 and 0 < figures["distinct_4grams"] <= 1
        assert figures["decoded"] == 1.0 and set(figures["nll_by_style"]) >= {"chorale", "folk"}
    if result["decision"] == "rejected":
        assert result["reasons"] and version.status == "rejected" and locate_model(MODEL)[2] == 1
    else:
        assert result["reasons"] == [] and locate_model(MODEL)[2] == 2
    logged = [json.loads(line) for line in (lab.work / PREFER_LOG).read_text().splitlines()]
    assert logged[-1]["decision"] == result["decision"]


def test_transposed_copies_move_every_pitch_alike_and_are_scored_by_the_reference(lab):
    """Each training example gains copies whose pitches all moved by one shift within ±6 (nothing else moved),
    each with the reference's own log-probability of the copy; held-out examples get none."""
    repo = open_repository(lab.var)
    _made(lab, repo, FileStore(lab.var), range(8))
    options = PreferOptions(max_steps=2, batch_size=4, min_examples=4, heldout_share=0.3, transposed_copies=2,
                            gate=GATE_PREFER)  # fmt: skip
    result = prefer(lab, repo, options, log=lambda _: None)
    assert 0 < result["examples"]["transposed"] <= 2 * result["examples"]["train"]
    loaded = get_model(lab.model)
    examples = [Example(PreferenceItem(ScoredSequence(s.tokens, s.start), 0.0, desirable=True), (str(i),))
                for i, s in enumerate(_stored(lab, repo, loaded.checkpoint.model.config.max_seq_len))]  # fmt: skip
    repo.close()
    copies = transposed_examples(examples, loaded.tokenizer, loaded.checkpoint.model, 3)
    assert copies and all(
        sum(c.songs == e.songs for c in copies) <= 3 for e in examples
    )  # out of range: skipped
    pitch = set(loaded.tokenizer.pitch_ids.tolist())
    by_song = {e.songs: e.item.chosen.tokens for e in examples}
    for copy in copies:
        original, moved = np.array(by_song[copy.songs]), np.array(copy.item.chosen.tokens)
        changed = np.isin(original, list(pitch))
        shift = set((moved - original)[changed].tolist())
        assert len(shift) == 1 and 0 < abs(shift.pop()) <= 6
        assert (moved[~changed] == original[~changed]).all()
        (own,) = reference_log_probs(loaded.checkpoint.model, [copy.item.chosen])
        assert copy.item.ref_chosen == pytest.approx(own, rel=1e-5)


def _stored(lab, repo, context):
    """The token sequences the store's songs keep, cut to the model's context."""
    for song in repo.list_songs(owner="user:panel"):
        kept = json.loads((lab.var / song.files["tokens"]).read_text())
        yield ScoredSequence(kept["tokens"][:context], kept["start"])


@pytest.fixture
def performance_lab(performance_world, tmp_path, monkeypatch):
    corpus, models = performance_world
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    monkeypatch.setenv("MUSEFORGE_VAR_DIR", str(tmp_path))
    clear_model_cache()
    yield Lab(tmp_path, PERFORMANCE, registry(), corpus)
    clear_model_cache()


def test_a_performance_rnn_learns_from_feedback_with_the_controls_it_sampled_under(performance_lab):
    """Two densities make two requests; each song is scored under the density it was sampled with."""
    lab = performance_lab
    repo = open_repository(lab.var)
    requests = ({"seconds": 2.0, "density": 1}, {"seconds": 2.0, "density": 6})
    _made(lab, repo, FileStore(lab.var), range(10), requests)
    options = PreferOptions(method="dpo", max_steps=4, batch_size=4, min_examples=4, heldout_share=0.3,
                            gate=GATE_PREFER)  # fmt: skip
    result = prefer(lab, repo, options, log=lambda _: None)
    repo.close()

    assert result["examples"]["method"] == "dpo" and result["examples"]["train"] >= 4
    assert result["decision"] in ("promoted", "rejected") and result["candidate"] == 2
    assert registry().get(PERFORMANCE, 2).parent == 1
    for side in ("production", "candidate"):
        figures = result["metrics"][side]
        assert 0 <= figures["preference_accuracy"] <= 1 and figures["decoded"] == 1.0
        assert math.isfinite(figures["nll"]) and 0 < figures["distinct_4grams"] <= 1


def test_prefer_is_skipped_without_enough_feedback(lab):
    repo = open_repository(lab.var)
    result = prefer(lab, repo, PreferOptions(gate=GATE_PREFER), log=lambda _: None)
    repo.close()
    assert result["decision"] == "skipped" and result["candidate"] is None
    assert "0 training examples from feedback on version 1" in result["reasons"][0]
    assert [v.number for v in registry().versions(MODEL)] == [1]


def test_the_command_prints_one_json_line_and_names_a_bad_method(lab):
    result = CliRunner().invoke(app, ["lab", "prefer", "--model", MODEL, "--method", "ppo"])
    assert result.exit_code == 2 and "--method must be one of dpo, kto, got 'ppo'" in result.output
    result = CliRunner().invoke(app, ["lab", "prefer", "--model", MODEL, "--beta", "0"])
    assert result.exit_code == 2 and "--beta" in result.output
    result = CliRunner().invoke(app, ["lab", "prefer", "--model", MODEL, "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["model"] == MODEL and line["decision"] == "skipped" and line["examples"]["method"] == "kto"


def test_a_verdict_reads_stars_before_opinions_before_actions():
    def f(kind, song, at, value=0, listener="a"):
        return Feedback(kind, listener, song, "m", 1, {}, value=value, at=at)

    got = utilities([
        f("like", "s1", 1), f("rate", "s1", 2, value=2),  # stars win: (2 - 3) / 2
        f("like", "s2", 1), f("dislike", "s2", 2), f("replay", "s2", 3),  # the last opinion wins
        f("play_end", "s3", 1), f("replay", "s3", 2), f("download", "s3", 3),  # 1.25 clipped to 1
        f("skip", "s4", 1), f("play_end", "s4", 2),  # -0.25
        f("play_end", "s5", 1), f("skip", "s5", 2), f("play_end", "s5", 3),  # 0: says nothing
        f("like", "s1", 5, listener="b"),  # another listener's verdict is theirs
    ])  # fmt: skip
    assert got == {
        ("a", "s1"): -0.5,
        ("a", "s2"): -1.0,
        ("a", "s3"): 1.0,
        ("a", "s4"): -0.25,
        ("b", "s1"): 1.0,
    }


def test_pairs_are_one_listener_one_request_two_verdicts():
    key = request_key({"style": "folk", "bars": 4, "seed": 1}, ["style", "bars", "seed"])
    assert key == request_key({"style": "folk", "bars": 4, "seed": 9}, ["style", "bars", "seed"])
    other = request_key({"style": "chorale", "bars": 4}, ["style", "bars", "seed"])
    judged = [Judged("a", "x", 1.0, key), Judged("a", "y", -1.0, key), Judged("a", "z", -1.0, key),
              Judged("a", "w", 1.0, other), Judged("b", "v", -1.0, key)]  # fmt: skip
    found = {(c.song_id, r.song_id) for c, r in pairs(judged)}
    assert found == {
        ("x", "y"),
        ("x", "z"),
    }  # not y-z (same verdict), not w (other request), not v (other listener)
    shares = [held_out(f"song{i}", share=0.2) for i in range(2000)]
    assert 0.15 < sum(shares) / len(shares) < 0.25 and held_out("song1", share=0.2) == shares[1]


def test_the_preference_gates_refuse_a_collapsed_or_unimproved_candidate():
    production = {"preference_accuracy": 0.5, "distinct_4grams": 0.8, "pitch_class_entropy": 3.0}
    better = {"preference_accuracy": 0.7, "distinct_4grams": 0.78, "pitch_class_entropy": 2.9}
    assert preference_reasons(production, better, 0.1) == []
    collapsed = {"preference_accuracy": 0.9, "distinct_4grams": 0.2, "pitch_class_entropy": 1.0}
    reasons = preference_reasons(production, collapsed, 0.1)
    assert len(reasons) == 2 and all("collapsing" in r for r in reasons)
    same = {**better, "preference_accuracy": 0.5}
    assert preference_reasons(production, same, 0.1) == [
        "preference accuracy on held-out feedback did not rise (0.500 -> 0.500)"
    ]
    unmeasured = {**production, "preference_accuracy": math.nan}
    assert (
        "no held-out pair"
        in preference_reasons(unmeasured, {**better, "preference_accuracy": math.nan}, 0.1)[0]
    )
