"""The API's one request type over every family: one field name means one type."""

from dataclasses import dataclass
from typing import Literal

import pytest

from museforge.families import FAMILIES, SongRequest
from museforge.web import requests


class Voices(SongRequest):
    voices: int | None = None


class VoicesAsWords(SongRequest):
    voices: Literal["each", "together"] = "each"


@dataclass
class Named:
    name: str
    request: type[SongRequest]


def test_two_families_giving_one_name_two_types_are_refused(monkeypatch):
    monkeypatch.setattr(requests, "FAMILIES", [Named("a", Voices), Named("b", VoicesAsWords)])
    with pytest.raises(
        TypeError, match=r"request field 'voices' is int \| None for a .* for b: one name, one type"
    ):
        requests._family_fields()
    monkeypatch.setattr(requests, "FAMILIES", [Named("a", Voices), Named("c", Voices)])
    assert "voices" in requests._family_fields()


def test_the_shipped_families_agree_on_every_name():
    fields = requests._family_fields()
    assert set(fields) == {name for family in FAMILIES for name in family.request.model_fields}
