"""MuseMorphose's sections of its model card: reconstruction NLL, attribute control and fidelity of style
transfer beside the paper's figures, and the transfer speed (`museforge.families.musemorphose.evaluate`)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from museforge.data.manifest import load_manifest
from museforge.families.card import CardMeasures, Log, ShipOptions, fmt
from museforge.families.loaded import LoadedModel
from museforge.families.musemorphose.decode import KEPT_CLASS_WEIGHT, decoded_rows, encode_piece, transfer
from museforge.families.musemorphose.evaluate import PAPER, SHIFTS, evaluate_transfer, reconstruction_nll
from museforge.families.musemorphose.model import MuseMorphose
from museforge.models.checkpoint import Checkpoint
from museforge.tokenizers.remi import RemiTokenizer

CONTROL_HEADING = "## Attribute control and fidelity (style transfer)"
STALE = ("control_candidates", "transfer_16_bars_candidates_seconds", "assisted")  # re-measured by resample


def card_measures(ckpt: Checkpoint, data_dir: Path, options: ShipOptions, log: Log) -> CardMeasures:
    """The reconstruction NLL as the card's likelihood, and the control section with ``transfer.json``."""
    log("MuseMorphose: reconstruction NLL, attribute control and fidelity on the test split")
    morph = _evaluation(ckpt, data_dir, options, log)
    return CardMeasures(morph["likelihood"], card_lines(morph), {"transfer.json": morph})


def card_remeasure(
    model_dir: Path, loaded: LoadedModel, served: LoadedModel, data_dir: Path, options: ShipOptions, log: Log
) -> list[str]:
    """The control section measured again, its transfers timed with ``served`` (the app's precision);
    ``evaluation/transfer.json`` is rewritten with it."""
    log(f"MuseMorphose: attribute control and fidelity of {options.transfer_pieces} test pieces")
    model, tok = loaded.checkpoint.model, loaded.tokenizer
    assert isinstance(model, MuseMorphose) and isinstance(tok, RemiTokenizer)
    path = model_dir / "evaluation" / "transfer.json"
    measured = {k: v for k, v in json.loads(path.read_text()).items() if k not in STALE}
    measured.update(_control(model, tok, data_dir, options, log, served))
    path.write_text(json.dumps(measured, indent=2) + "\n")
    return card_lines(measured)


def _evaluation(ckpt: Checkpoint, data_dir: Path, options: ShipOptions, log: Log) -> dict[str, Any]:
    """Test-split reconstruction NLL and `_control`."""
    model, tok = ckpt.model, RemiTokenizer.from_state_dict(ckpt.tokenizer)
    assert isinstance(model, MuseMorphose)
    nll = reconstruction_nll(model, tok, data_dir, "test", max_segments=options.max_test_pieces)
    unit = f"{model.config.n_bars}-bar segments (reconstruction, z = posterior mean)"
    likelihood = {"n_sequences": nll["n_segments"], "unit": unit, **nll}
    return {"likelihood": likelihood, **_control(model, tok, data_dir, options, log)}


def _control(
    model: MuseMorphose,
    tok: RemiTokenizer,
    data_dir: Path,
    options: ShipOptions,
    log: Log,
    served: LoadedModel | None = None,
) -> dict[str, Any]:
    """Control ρ / leak / fidelity of ``options.transfer_pieces`` test pieces drawn at random, and the seconds a
    16-bar transfer takes here (mean of three pieces): first the model alone (one sample per bar, no guidance,
    as the paper samples), then under ``assisted``, the sampling settings that help it (guidance, then guidance
    with ``options.candidates`` tries per bar), each ``{"candidates", "guidance", "control", "seconds",
    "precision", "kept_class_weight"}`` (the weight `choose_candidate` gave a kept class's miss). The
    transfers are timed with ``served``'s sampler (the precision the app and CLI use) when given."""
    records = load_manifest(data_dir, "test")
    order = np.random.default_rng(options.seed).permutation(len(records))
    pieces = [records[i].midi_path(data_dir) for i in order[: options.transfer_pieces]]
    long = []  # the first three pieces of >= 16 bars, cut to 16 bars
    for i in order:
        encoded = encode_piece(model, tok, records[i].midi_path(data_dir))
        if encoded.n_bars >= 16:
            long.append(tok.decode(encoded.head(16).ids))
        if len(long) == 3:
            break

    def timed_model(rows: int) -> tuple[MuseMorphose, str]:
        if served is None:
            return model, "fp32"
        sampler, precision = served.sampler(rows)
        assert isinstance(sampler, MuseMorphose)
        return sampler, precision

    def transfer_seconds(candidates: int, guidance: float) -> float | None:
        seconds = []
        timed = timed_model(decoded_rows(candidates, guidance))[0]
        for piece in long:  # every bar re-generated
            start = time.perf_counter()
            transfer(timed, tok, piece, rhythm=1, seed=options.seed, candidates=candidates, guidance=guidance)
            seconds.append(time.perf_counter() - start)
        return float(np.mean(seconds)) if seconds else None

    def control(candidates: int, guidance: float) -> dict[str, Any]:
        log(
            f"control: {len(pieces)} pieces x {len(SHIFTS)} shifts x 2 attributes, {candidates} tries per bar, "
            f"guidance {guidance}"
        )
        every = max(1, len(pieces) // 10)

        def progress(done: int, total: int) -> None:
            if done % every == 0 or done == total:
                log(f"  {done}/{total} pieces")

        return evaluate_transfer(
            model, tok, pieces, seed=options.seed, candidates=candidates, guidance=guidance, progress=progress
        )

    settings = []
    if options.guidance > 0:
        settings.append((1, options.guidance))
    if options.candidates > 1:
        settings.append((options.candidates, options.guidance))
    return {
        "control": control(1, 0.0),
        "paper": PAPER,
        "transfer_16_bars_seconds": transfer_seconds(1, 0.0),
        "precision": timed_model(1)[1],
        "assisted": [
            {
                "candidates": c, "guidance": g, "control": control(c, g), "seconds": transfer_seconds(c, g),
                "precision": timed_model(decoded_rows(c, g))[1], "kept_class_weight": KEPT_CLASS_WEIGHT,
            }
            for c, g in settings
        ],
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
    }  # fmt: skip


def _setting_label(candidates: int, guidance: float) -> str:
    parts = [
        f"guidance {guidance:g}" if guidance else "",
        f"best of {candidates} per bar" if candidates > 1 else "",
    ]
    return " + ".join(p for p in parts if p) or "one sample per bar"


def card_lines(section: dict[str, Any]) -> list[str]:
    c, p = section["control"], section["paper"]
    assisted = section.get("assisted", [])
    runs = [
        ("one sample per bar", c),
        *[(_setting_label(a["candidates"], a["guidance"]), a["control"]) for a in assisted],
    ]
    inherent = c.get("leak_inherent")
    lines = [
        CONTROL_HEADING,
        f"{c['pieces']} test pieces drawn at random, their first {c['bars']} bars transferred with all bars shifted "
        f"by {c['shifts'][0]:+d}..{c['shifts'][-1]:+d} classes of one attribute (the paper's protocol; "
        f"{c['transfers']} transfers, {c['seconds_per_transfer']:.2f} s each in batches of {len(c['shifts'])}). "
        "ρ: Spearman between requested and measured class per bar; leak: ρ between the requested class and the "
        "other attribute's measured class; fidelity: per-bar similarity to the input (1 = identical).",
        "",
    ]
    if inherent:
        lines += [
            "On this music the two attributes are correlated bar by bar (busier bars hold fewer notes at once), so "
            "even a model that played exactly the requested classes would show a leak: the requested classes' "
            f"own, {fmt(inherent['rhythm'])} (rhythm) and {fmt(inherent['polyphony'])} (polyphony). The excess "
            "leak is the leak beyond that, what the model adds (0 for exact control); on the paper's Pop1K7 the "
            "two coincide.",
            "",
        ]
    if assisted:
        lines += [
            "Measured with one sample per bar (the model alone, as the paper samples), then with "
            + " and with ".join(_setting_label(a["candidates"], a["guidance"]) for a in assisted)
            + ". Guidance (`--guidance`) amplifies the asked change against the piece's own classes, as "
            "classifier-free guidance does; best of N (`--candidates`) samples each bar N times and keeps the try "
            "whose measured classes are nearest the asked ones"
            + "".join(
                f" (in the best of {a['candidates']}, a miss on the attribute asked to stay counts "
                f"{a['kept_class_weight']:g} times)"
                for a in assisted
                if a["candidates"] > 1 and a.get("kept_class_weight", 1.0) != 1.0
            )
            + ".",
            "",
        ]
    lines += [
        "| attribute | sampling | ρ (ours) | ρ (paper) | leak (ours) | excess leak | leak (paper) | chroma sim. "
        "| groove sim. |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {a} | {label} | {fmt(r['rho'][a])} | {p['rho'][a]} | {fmt(r['leak'][a])} | "
            f"{fmt(r.get('leak_excess', {}).get(a))} | {p['leak'][a]} | "
            f"{fmt(r['fidelity'][a]['chroma'])} | {fmt(r['fidelity'][a]['groove'])} |"
            for a in ("rhythm", "polyphony")
            for label, r in runs
        ],
        "",
        "The paper's numbers are on Pop1K7 piano with its full-size model trained 150k steps; this model is far "
        "smaller and under-trained (see Training), and the music21 corpus is mostly monophonic, so polyphony "
        "classes are hard to move. Full numbers: `evaluation/transfer.json`.",
        "",
        "## Transfer speed",
        "Style transfer of a 16-bar piece (all bars re-generated), at the precision the app samples that many "
        "rows in: "
        + ", ".join(
            [
                f"{fmt(section['transfer_16_bars_seconds'], 1)} s with one sample per bar "
                f"({section.get('precision', 'fp32')})",
                *[
                    f"{fmt(a['seconds'], 1)} s with {_setting_label(a['candidates'], a['guidance'])} "
                    f"({a.get('precision', 'fp32')})"
                    for a in assisted
                ],
            ]
        )
        + f" ({section['machine']}).",
        "",
    ]
    return lines
