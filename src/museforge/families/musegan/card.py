"""MuseGAN's section of its model card: the paper's metric table (Dong et al. 2018, Table 1) for generated bars
against the training data; a GAN has no likelihood to report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from museforge.families.card import CardMeasures, Log, ShipOptions, fmt
from museforge.families.musegan.gan import musegan_tables
from museforge.families.musegan.model import MuseGAN
from museforge.models.checkpoint import Checkpoint
from museforge.tokenizers.pianoroll import PianoRollTokenizer


def card_measures(
    filters: dict[str, Any], ckpt: Checkpoint, data_dir: Path, options: ShipOptions, log: Log
) -> CardMeasures:
    """The metric table of ``options.gan_bars`` generated bars against the training data, with the phrase
    ``filters`` the run trained with (its preset's model settings and overrides)."""
    log(f"MuseGAN metrics of {options.gan_bars} generated bars and of the training data")
    tokenizer = PianoRollTokenizer.from_state_dict(ckpt.tokenizer)
    assert isinstance(ckpt.model, MuseGAN) and isinstance(tokenizer, PianoRollTokenizer)
    tables = musegan_tables(
        ckpt.model, tokenizer, data_dir, filters, bars=options.gan_bars, seed=options.seed
    )
    return CardMeasures(None, card_lines(tables), loss_unit="MuseGAN-metric gap")


def card_lines(section: dict[str, Any]) -> list[str]:
    """MuseGAN's Table 1 layout: one row per set, one column per metric and track."""
    columns = [(m, k) for m in ("EB", "UPC", "QN", "DP", "TD") for k in section["training"].get(m, {})]
    unit = {"EB": " %", "QN": " %", "DP": " %"}
    lines = [
        f"## MuseGAN metrics: {section['generated_bars']} generated bars vs {section['training_bars']} training bars",
        "EB empty bars, UPC used pitch classes per bar, QN notes no shorter than a 32nd note (the paper's "
        f"qualified notes: {section['qn_min_steps']} steps here), DP drum onsets on the 16th grid, TD tonal distance "
        f"between tracks. Gap (mean relative error of EB/UPC/QN): {fmt(section['gap'])}.",
        "",
        "| set | " + " | ".join(f"{m} {k}{unit.get(m, '')}" for m, k in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, key in (("training data", "training"), ("generated", "generated")):
        cells = [fmt(section[key].get(m, {}).get(k), 2) for m, k in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]
