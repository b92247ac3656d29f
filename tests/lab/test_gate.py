"""The gate's rules, each on numbers chosen by hand so every reason is seen to fire and to stay quiet."""

import math

from museforge.lab.gate import GateSettings, decide, rose_beyond_chance

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
        "near-copy rate rose from 0% to 38% (more than chance over 8 and 8 samples)": _metrics(
            near_copy_rate=3 / 8, new_nll=1.0
        ),
        "overlap with held-out music fell from 0.700 to 0.600": _metrics(overlap=0.6, new_nll=1.0),
    }
    for expected, candidate in cases.items():
        reasons = decide(_metrics(), candidate, SETTINGS)
        assert len(reasons) == 1 and expected in reasons[0], (expected, reasons)


def test_no_held_out_new_music_is_a_reason_and_nan_overlap_fails():
    reasons = decide(_metrics(new_nll=None), _metrics(new_nll=None, overlap=math.nan), SETTINGS)
    assert any("no held-out new music" in r for r in reasons) and any("overlap" in r for r in reasons)


def test_a_near_copy_rate_must_rise_by_more_than_chance():
    """One-sided two-proportion z-test at 95 %, by hand for 8 samples each: 0 -> 2 near-copies gives pooled
    p = 1/8, spread sqrt(1/8 * 7/8 * 2/8) = 0.165, z = 0.25 / 0.165 = 1.51 (chance); 0 -> 3 gives p = 3/16,
    spread 0.195, z = 1.92 (a rise); 1 -> 4 gives p = 5/16, spread 0.232, z = 1.62 (chance)."""
    assert decide(_metrics(), _metrics(near_copy_rate=1 / 8, new_nll=1.0), SETTINGS) == []
    assert decide(_metrics(), _metrics(near_copy_rate=2 / 8, new_nll=1.0), SETTINGS) == []
    assert rose_beyond_chance(0.0, 8, 3 / 8, 8) and not rose_beyond_chance(1 / 8, 8, 4 / 8, 8)
    assert rose_beyond_chance(0.0, 100, 0.05, 100)  # the same rise on many samples is no longer chance
    assert not rose_beyond_chance(0.2, 8, 0.1, 8) and not rose_beyond_chance(0.0, 8, 0.0, 8)
    assert not rose_beyond_chance(math.nan, 8, 0.5, 8) and not rose_beyond_chance(0.0, 0, 0.5, 8)
