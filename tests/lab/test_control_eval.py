"""Control fidelity of generation from scratch, on the shipped models: what was asked reaches the model, and the
measured classes and ρ are those of the music it wrote."""

import numpy as np
import pytest

from museforge.families.serving import generate_song, get_model
from museforge.lab.control_eval import generation_control, has_controls
from museforge.metrics.controls import histogram_fidelity, measure_bar_classes, spearman
from museforge.tokenizers.attributes import density_class, note_density, pitch_class_histogram


def test_bar_controls_of_a_remi_transformer():
    loaded = get_model("remi-transformer")
    tok = loaded.tokenizer
    result = generation_control(loaded, pieces=2, bars=4, seed=3)
    assert result["unit"] == "bar" and result["model"] == "remi-transformer" and result["pieces"] == 2
    rng = np.random.default_rng(3)
    for i in range(2):
        asked = {a: rng.integers(0, 8, 4).tolist() for a in ("rhythm", "polyphony")}
        assert {a: result["requested"][a][i] for a in asked} == asked
        song = generate_song(
            loaded, bars=4, rhythm=asked["rhythm"], polyphony=asked["polyphony"], seed=3 + i
        )[0]
        # the plan reached the model: each Bar is followed by the asked Rhythm and Polyphony tokens
        bars = [k for k, t in enumerate(song.tokens) if t == tok.bar_id]
        assert [song.tokens[k + 1 : k + 3] for k in bars[:4]] == [
            tok.attribute_tokens(r, p) for r, p in zip(asked["rhythm"], asked["polyphony"], strict=True)
        ]
        found = measure_bar_classes(song.score, tok.config.boundaries, 4)
        assert {a: result["measured"][a][i] for a in asked} == {a: found[a].tolist() for a in asked}
    for a, other in (("rhythm", "polyphony"), ("polyphony", "rhythm")):
        asked, got = np.concatenate(result["requested"][a]), np.concatenate(result["measured"][a])
        assert result["rho"][a] == pytest.approx(spearman(asked, got))
        assert result["leak"][a] == pytest.approx(spearman(asked, np.concatenate(result["measured"][other])))
        assert result["leak_excess"][a] == pytest.approx(result["leak"][a] - result["leak_inherent"][a])


def test_piece_controls_of_a_performance_rnn():
    loaded = get_model("performance-rnn")
    result = generation_control(loaded, pieces=2, seconds=4.0, seed=1)
    assert result["unit"] == "piece" and result["seconds"] == 4.0
    scales, histograms = [], []
    for i, (density, classes) in enumerate(
        zip(result["requested"]["density"], result["requested"]["pitch_classes"], strict=True)
    ):
        assert 0 <= density < 8 and len(classes) == 7  # a major or minor scale
        scale = np.zeros(12)
        scale[classes] = 1.0
        scales.append(scale)
        song = generate_song(loaded, seconds=4.0, density=density, pitch_classes=list(classes), seed=1 + i)[0]
        assert result["measured"]["density"][i] == density_class(note_density(song.score))
        histograms.append(pitch_class_histogram(song.score))
    assert result["rho"]["density"] == pytest.approx(
        spearman(result["requested"]["density"], result["measured"]["density"]), nan_ok=True
    )
    assert result["rho"]["pitch_class_histogram"] == pytest.approx(histogram_fidelity(scales, histograms))


def test_models_without_controls_are_refused():
    musegan = get_model("musegan")
    assert not has_controls(musegan) and has_controls(get_model("musemorphose"))
    with pytest.raises(ValueError, match="takes no attribute controls"):
        generation_control(musegan, pieces=1)
    with pytest.raises(ValueError, match="pieces must be >= 1"):
        generation_control(get_model("remi-transformer"), pieces=0)
