"""The gate's rules, each on numbers chosen by hand so every reason is seen to fire and to stay quiet."""

import math

from museforge.lab.gate import GateSettings, decide

SETTINGS = GateSettings(nll_tolerance=0.02, min_new_gain=0.0, overlap_tolerance=0.05)


def _metrics(**changes):
    base = {
        "nll_by_style": {"chorale": 1.00, "folk": 0.80},
        "new_nll": 2.0,
        "decoded": 1.0,
        "near_copy_rate": 0.0,
        "overlap": 0.70,
    }
    return {**base, **changes}


def test_a_candidate_no_worse_and_better_on_the_new_music_passes():
    candidate = _metrics(
        nll_by_style={"chorale": 1.019, "folk": 0.75, "fiddle": 3.0}, new_nll=1.5, overlap=0.66
    )
    assert decide(_metrics(), candidate, SETTINGS) == []


def test_each_rule_rejects_with_its_numbers():
    cases = {
        "held-out NLL of chorale rose from 1.0000 to 1.0300": _metrics(
            nll_by_style={"chorale": 1.03, "folk": 0.8}, new_nll=1.0
        ),
        "held-out NLL of folk rose from 0.8000 to nan": _metrics(nll_by_style={"chorale": 1.0}, new_nll=1.0),
        "did not improve (2.0000 -> 2.0000": _metrics(),
        "only 50% of the samples decoded": _metrics(decoded=0.5, new_nll=1.0),
        "near-copy rate rose from 0% to 25%": _metrics(near_copy_rate=0.25, new_nll=1.0),
        "overlap with held-out music fell from 0.700 to 0.600": _metrics(overlap=0.6, new_nll=1.0),
    }
    for expected, candidate in cases.items():
        reasons = decide(_metrics(), candidate, SETTINGS)
        assert len(reasons) == 1 and expected in reasons[0], (expected, reasons)


def test_no_held_out_new_music_is_a_reason_and_nan_overlap_fails():
    reasons = decide(_metrics(new_nll=None), _metrics(new_nll=None, overlap=math.nan), SETTINGS)
    assert any("no held-out new music" in r for r in reasons) and any("overlap" in r for r in reasons)
