"""Likelihood interface with an n-gram baseline fit on real REMI tokens, validity, and control fidelity."""

import math

import numpy as np
import pytest

from museforge.metrics.controls import control_fidelity, histogram_fidelity, measure_bar_classes, spearman
from museforge.metrics.likelihood import NGramModel, evaluate_likelihood, validity_rate
from museforge.tokenizers import build_tokenizer


@pytest.fixture(scope="module")
def remi():
    return build_tokenizer("remi")


@pytest.fixture(scope="module")
def token_sets(remi, chorales, folk_tunes):
    scores = list(chorales.values()) + list(folk_tunes.values())
    ids = [list(remi.encode(s).ids) for s in scores]
    return ids[::2], ids[1::2]


def test_ngram_hand_values():
    model = NGramModel(n=1, vocab_size=2, alpha=0.1).fit([[0, 1, 0, 1]])
    # Predicted tokens 1, 0, 1: p(1) = (2 + .1) / (3 + .2).
    assert model.prob([], 1) == pytest.approx(2.1 / 3.2)
    result = evaluate_likelihood(model, [[0, 1, 0, 1]])
    expected = -(2 * math.log(2.1 / 3.2) + math.log(1.1 / 3.2)) / 3
    assert result.nll == pytest.approx(expected)
    assert result.perplexity == pytest.approx(math.exp(expected))
    assert result.n_tokens == 3


def test_ngram_on_real_tokens(remi, token_sets):
    train, held_out = token_sets
    vocab = len(remi.vocab) if hasattr(remi, "vocab") else remi.vocab_size
    unigram = NGramModel(1, vocab).fit(train)
    trigram = NGramModel(3, vocab).fit(train)
    context = held_out[0][:5]
    assert sum(trigram.prob(context, t) for t in range(vocab)) == pytest.approx(1.0)
    uni, tri = evaluate_likelihood(unigram, held_out), evaluate_likelihood(trigram, held_out)
    assert tri.perplexity < uni.perplexity < vocab
    assert tri.n_tokens == sum(len(s) - 1 for s in held_out)


def test_likelihood_checks_model_output():
    class Broken:
        def log_probs(self, ids):
            return np.zeros(len(ids))

    with pytest.raises(ValueError, match="log_probs"):
        evaluate_likelihood(Broken(), [[1, 2, 3]])
    assert math.isnan(evaluate_likelihood(Broken(), [[1]]).nll)


def test_validity(remi, token_sets):
    good = token_sets[1][:3]
    result = validity_rate([*good, [], [0, 0, 0]], remi.decode)
    assert result.n_sequences == 5 and result.n_valid == 3 and result.rate == pytest.approx(0.6)
    assert set(result.failures) == {3, 4}

    def explode(ids):
        raise RuntimeError("bad token")

    crashed = validity_rate(good, explode)
    assert crashed.rate == 0.0 and "bad token" in crashed.failures[0]


def test_control_fidelity_on_real_bars(chorales):
    measured = [measure_bar_classes(s) for s in chorales.values()]
    rhythm = np.concatenate([m["rhythm"] for m in measured])
    poly = np.concatenate([m["polyphony"] for m in measured])
    exact = control_fidelity({"rhythm": rhythm, "polyphony": poly}, {"rhythm": rhythm, "polyphony": poly})
    assert exact["rho"] == {"rhythm": pytest.approx(1.0), "polyphony": pytest.approx(1.0)}
    rng = np.random.default_rng(0)
    independent = control_fidelity(
        {"rhythm": rhythm, "polyphony": rng.permutation(poly)},
        {"rhythm": rng.permutation(rhythm), "polyphony": poly},
    )
    assert abs(independent["rho"]["rhythm"]) < 0.3
    assert set(independent["leak"]) == {"rhythm->polyphony", "polyphony->rhythm"}
    # exact control shows the music's own rhythm/polyphony correlation as leak, all of it inherent
    assert exact["leak_inherent"] == exact["leak"]
    assert exact["leak_inherent"]["rhythm->polyphony"] == pytest.approx(spearman(rhythm, poly))
    assert exact["leak_excess"] == {"rhythm->polyphony": 0.0, "polyphony->rhythm": 0.0}


def test_bar_classes_padded_to_the_bars_asked_for(chorales):
    score = next(iter(chorales.values()))
    found = measure_bar_classes(score)
    n = len(found["rhythm"])
    longer = measure_bar_classes(score, bars=n + 3)
    assert longer["rhythm"][:n].tolist() == found["rhythm"].tolist()
    assert longer["polyphony"][n:].tolist() == [0, 0, 0]  # silent bars past the music
    assert measure_bar_classes(score, bars=2)["rhythm"].tolist() == found["rhythm"][:2].tolist()


def test_spearman_and_histograms():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="length"):
        spearman([1, 2], [1, 2, 3])
    hist = np.array([5, 0, 3, 0, 4, 2, 0, 6, 0, 1, 0, 2], float)
    assert histogram_fidelity([hist], [hist / hist.sum()]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="attributes"):
        control_fidelity({"rhythm": [1, 2]}, {"polyphony": [1, 2]})
