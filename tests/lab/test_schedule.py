"""The lab's schedule as people write it, and when it runs next."""

import calendar

import pytest

from museforge.lab.schedule import Schedule, parse_schedule

NOON = calendar.timegm((2026, 12, 5, 12, 0, 0))  # a Saturday, 12:00 UTC


def test_daily_and_interval_forms():
    assert parse_schedule("03:30") == parse_schedule("daily at 03:30") == Schedule(at=3 * 3600 + 30 * 60)
    assert parse_schedule(" Every 6h ") == Schedule(every=6 * 3600)
    assert parse_schedule("every 90s") == Schedule(every=90) and parse_schedule("every 1.5d").every == 129600


@pytest.mark.parametrize("text", ["", "25:00", "3pm", "every 0h", "every -1m", "every 5 weeks", "hourly"])
def test_anything_else_is_refused_with_the_forms(text):
    with pytest.raises(ValueError, match="HH:MM"):
        parse_schedule(text)


def test_next_run_is_strictly_after_now():
    assert Schedule(at=13 * 3600).next_run(NOON) == NOON + 3600  # later today
    assert Schedule(at=3 * 3600).next_run(NOON) == NOON + 15 * 3600  # tomorrow at 03:00
    assert Schedule(at=12 * 3600).next_run(NOON) == NOON + 86400  # exactly now: the next day
    assert Schedule(every=60).next_run(NOON) == NOON + 60
