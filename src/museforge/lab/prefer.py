"""`museforge lab prefer`: fine-tune a candidate on what listeners thought of the production version's songs,
then gate it.

The preference set is read from the store's feedback (`museforge.lab.feedback`): DPO pairs or KTO single songs,
each song re-scored from the tokens it keeps, with the conditioning its family says it was sampled under. The
frozen reference is the production version (`museforge.training.preference`); sampling is untouched. A fixed
share of the examples (by a hash of their song ids) is held out.

The candidate passes the lab's gate on production's held-out music (per-style NLL within ``nll_tolerance``,
every sample decodes, near-copies and MGEval overlap no worse; new music is not the point here, so that rule
is off) and two gates of its own:

- preference accuracy: on held-out pairs, the candidate's per-token log-likelihood ranks the liked song above
  the other more often than production's does;
- diversity: its samples' distinct 4-gram share and mean pitch-class entropy are no lower than production's
  minus ``diversity_tolerance`` (relative), so it cannot collapse onto one liked tune.

A gate on held-out NLL alone would block good versions (preference tuning trades a little likelihood on the
corpus for what listeners like): hence the wider default NLL tolerance, 0.05 nats/token (about 5 % of the
shipped REMI model's held-out NLL), against the update cycle's 0.02.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from museforge.families import Family, get_family, load_checkpoint
from museforge.lab.cycle import Lab, Log, locked
from museforge.lab.feedback import Judged, held_out, pairs, request_key, utilities
from museforge.lab.gate import GateSettings, decide, measure, tokenized_for
from museforge.lab.heldout import HELDOUT
from museforge.metrics.originality import OriginalityIndex
from museforge.models.versions import Version
from museforge.models.zoo import CARD_FILE, ORIGINALITY_FILE
from museforge.store.repository import Repository
from museforge.tokenizers.base import Tokenizer
from museforge.tokenizers.registry import load_tokenizer_state
from museforge.training import TrainConfig, Trainer
from museforge.training.preference import (
    PreferenceCollator,
    PreferenceConfig,
    PreferenceItem,
    PreferenceStep,
    ScoredSequence,
    disable_dropout,
    reference_log_probs,
)

PREFER_LOG = "prefer.jsonl"
SHIFTS = [s for s in range(-6, 7) if s]  # semitones a transposed copy may move (training's ±6)


@dataclass
class PreferOptions:
    method: str = "kto"
    max_steps: int = 100
    # A nudge: the reference is a trained model, and learned rewards over-optimise fast. 5e-5 over 100 steps is what
    # the listener panel ran in all its runs (README): every KTO first round was promoted, held-out NLL up 0.4-1.3 %.
    lr: float = 5e-5
    batch_size: int = 8
    beta: float | None = None  # None: the method's default (`museforge.training.preference.DEFAULT_BETA`)
    min_examples: int = 8  # fewer judged songs (KTO) or pairs (DPO) than this: skipped
    heldout_share: float = 0.2
    diversity_tolerance: float = 0.1  # relative fall of distinct 4-grams / pitch-class entropy allowed
    transposed_copies: int = 0  # per training example, transposed (see `transposed_examples`); 0: none
    seed: int = 0
    device: str = "cpu"
    gate: GateSettings = field(default_factory=lambda: GateSettings(nll_tolerance=0.05))


@dataclass
class Example:
    item: PreferenceItem
    songs: tuple[str, ...]  # the song ids it is made of (chosen first)


def prefer(
    lab: Lab, repo: Repository, options: PreferOptions | None = None, log: Log = print
) -> dict[str, Any]:
    """Build the preference set, fine-tune, gate, promote or reject; returns the line `lab prefer` prints:
    ``{"model", "candidate", "decision", "reasons", "metrics", "examples"}``."""
    options = options or PreferOptions()
    with locked(lab):
        production = lab.registry.production(lab.model)
        parent_dir = lab.registry.path(lab.model, production)
        reference = load_checkpoint(parent_dir, options.device)
        family = get_family(reference.model_name)
        if family.sequence_inputs(reference.model, {}, 1) is None:
            raise ValueError(
                f"a {family.label} cannot learn from preferences: its songs are not token sequences"
            )
        examples = _examples(lab, repo, production, family, reference.model, options)
        train = [e for e in examples if not held_out(*e.songs, share=options.heldout_share)]
        test = [e for e in examples if held_out(*e.songs, share=options.heldout_share)]
        copies = (
            transposed_examples(train, load_tokenizer_state(reference.tokenizer), reference.model,
                                options.transposed_copies)
            if options.transposed_copies else []
        )  # fmt: skip
        counts = {
            "examples": len(examples),
            "train": len(train),
            "heldout": len(test),
            "transposed": len(copies),
            "method": options.method,
        }
        log(f"{len(examples)} {options.method} examples from feedback on version {production.number}")
        if len(train) < options.min_examples:
            why = f"{len(train)} training examples from feedback on version {production.number}; at least " \
                  f"{options.min_examples} needed"  # fmt: skip
            return _result(lab, "skipped", [why], {}, counts)
        run = lab.work / "prefer-runs" / time.strftime("%Y%m%d-%H%M%S")
        best = _fine_tune(
            parent_dir, [e.item for e in train + copies], [e.item for e in test], run, options, log
        )
        candidate = lab.registry.add(
            lab.model, best, production.number, run=str(run), data={"feedback": counts}
        )
        _complete(lab, candidate, parent_dir, counts)
        log(f"gating version {candidate.number} against version {production.number}")
        metrics = _measure_both(lab, production, candidate, [e.item for e in test], family, options)
        reasons = decide(metrics["production"], metrics["candidate"], options.gate, new_music=False)
        reasons += preference_reasons(
            metrics["production"], metrics["candidate"], options.diversity_tolerance
        )
        gate = {"reasons": reasons, "settings": options.gate.to_dict(), **metrics}
        lab.registry.update(lab.model, candidate.number, gate=gate, metrics=metrics["candidate"])
        if reasons:
            lab.registry.update(lab.model, candidate.number, status="rejected", note="; ".join(reasons))
        else:
            lab.registry.promote(
                lab.model, candidate.number, note=f"promoted by lab prefer ({options.method})"
            )
        return _result(lab, "rejected" if reasons else "promoted", reasons, metrics, counts, candidate.number)


def _examples(
    lab: Lab, repo: Repository, production: Version, family: Family, model: torch.nn.Module,
    options: PreferOptions,
) -> list[Example]:  # fmt: skip
    """The preference examples of the feedback on ``production``'s songs, with the reference's log-probs."""
    verdicts = utilities(repo.list_feedback(model=lab.model, version=production.number))
    seqs: dict[str, ScoredSequence] = {}
    judged = []
    for (listener, song_id), utility in verdicts.items():
        song = repo.get_song(song_id=song_id)
        if song is None:
            continue
        seq = seqs.get(song_id) or _sequence(lab.var, song, family, model)
        if seq is None:  # a song made before songs kept their tokens, or by a family without them
            continue
        seqs[song_id] = seq
        judged.append(
            Judged(listener, song_id, utility, request_key(song.params, family.request.model_fields))
        )
    ids = sorted(seqs)
    refs = dict(zip(ids, reference_log_probs(model, [seqs[i] for i in ids]), strict=True))
    if options.method == "dpo":
        return [
            Example(PreferenceItem(seqs[c.song_id], refs[c.song_id], seqs[r.song_id], refs[r.song_id]),
                    (c.song_id, r.song_id))
            for c, r in pairs(judged)
        ]  # fmt: skip
    return [
        Example(PreferenceItem(seqs[j.song_id], refs[j.song_id], desirable=j.utility > 0), (j.song_id,))
        for j in sorted(judged, key=lambda j: (j.song_id, j.listener))
    ]


def transposed_examples(
    examples: list[Example], tokenizer: Tokenizer, model: torch.nn.Module, copies: int
) -> list[Example]:
    """``copies`` transposed copies of each example, with the reference's log-probabilities of their songs.

    What listeners judge here (a busy rhythm, stepwise melody, a wide range, a major key) does not change
    under transposition, while the exact pitches of a few hundred liked songs are what a model overfits:
    copies in other keys teach the taste rather than the tunes (fewer near-copies, less collapse). The shifts
    are drawn from ±6 semitones by a hash of the songs, so the same feedback gives the same set. Songs with
    per-position conditioning are left alone (it may hold pitch, as a Performance RNN's pitch-class control
    does), as are tokenizers that cannot transpose tokens."""
    moved = [(e, seqs) for e in examples for seqs in _shifted(e, tokenizer, copies)]
    refs = iter(reference_log_probs(model, [s for _, seqs in moved for s in seqs]))
    out = []
    for example, seqs in moved:
        item = example.item
        chosen, ref_chosen = seqs[0], next(refs)
        rejected, ref_rejected = (seqs[1], next(refs)) if len(seqs) > 1 else (None, 0.0)
        out.append(Example(replace(item, chosen=chosen, ref_chosen=ref_chosen, rejected=rejected,
                                   ref_rejected=ref_rejected), example.songs))  # fmt: skip
    return out


def _shifted(example: Example, tokenizer: Tokenizer, copies: int) -> list[list[ScoredSequence]]:
    """The example's songs moved by up to ``copies`` shifts drawn by a hash of their ids; a shift that takes
    a note out of range is skipped."""
    item = example.item
    seqs = [item.chosen, *([item.rejected] if item.rejected is not None else [])]
    if any(s.inputs for s in seqs) or not hasattr(tokenizer, "transpose_ids"):
        return []
    digest = hashlib.sha256("|".join(example.songs).encode()).digest()
    shifts = np.random.default_rng(int.from_bytes(digest[:8], "big")).permutation(SHIFTS)[:copies]
    out = []
    for shift in shifts.tolist():
        moved = [tokenizer.transpose_ids(np.asarray(s.tokens), shift) for s in seqs]
        if all(m is not None for m in moved):
            out.append([ScoredSequence(m.tolist(), s.start) for m, s in zip(moved, seqs, strict=True)])
    return out


def _sequence(var: Path, song: Any, family: Family, model: torch.nn.Module) -> ScoredSequence | None:
    """A stored song as the model saw it: its kept tokens (cut to the model's context) and conditioning."""
    path = song.files.get("tokens")
    if path is None or not (var / path).is_file():
        return None
    kept = json.loads((var / path).read_text())
    context = getattr(model.config, "max_seq_len", None)
    tokens = kept["tokens"][:context] if context else kept["tokens"]
    if kept["start"] >= len(tokens):
        return None
    inputs = family.sequence_inputs(model, song.params, len(tokens))
    return ScoredSequence(tokens, kept["start"], inputs or {})


def _fine_tune(
    parent_dir: Path, train: list[PreferenceItem], test: list[PreferenceItem], run: Path, options: PreferOptions,
    log: Log,
) -> Path:  # fmt: skip
    """Train the candidate from production's weights on ``train`` (evaluated on ``test`` when there is one)."""
    policy = load_checkpoint(parent_dir, options.device)
    model = policy.model
    disable_dropout(model)
    model.train()
    paired = options.method == "dpo"
    config = TrainConfig(
        out_dir=str(run), epochs=10_000, max_steps=options.max_steps, batch_size=min(options.batch_size, len(train)),
        lr=options.lr, warmup_steps=max(1, options.max_steps // 10), checkpoint_every=max(1, options.max_steps // 2),
        seed=options.seed, progress=False, log_every=max(1, options.max_steps // 10),
    )  # fmt: skip
    usable_test = test if test and (not paired or all(t.rejected is not None for t in test)) else None
    step = PreferenceStep(PreferenceConfig(method=options.method, beta=options.beta))
    log(
        f"preference fine-tuning ({options.method}) for up to {options.max_steps} steps on {len(train)} examples"
    )
    Trainer(model, train, config, eval_data=usable_test, step_fn=step, collate_fn=PreferenceCollator(),
            tokenizer=policy.tokenizer).fit()  # fmt: skip
    return run / "best" if (run / "best").exists() else run / "last"


def _complete(lab: Lab, candidate: Version, parent_dir: Path, counts: dict[str, Any]) -> None:
    """The candidate carries production's held-out set, originality index and card (with a line on its run)."""
    folder = lab.registry.path(lab.model, candidate)
    shutil.copytree(parent_dir / HELDOUT, folder / HELDOUT, dirs_exist_ok=True)
    if (parent_dir / ORIGINALITY_FILE).is_file():
        shutil.copy2(parent_dir / ORIGINALITY_FILE, folder / ORIGINALITY_FILE)
    card = (parent_dir / CARD_FILE).read_text(encoding="utf-8") if (parent_dir / CARD_FILE).is_file() else ""
    (folder / CARD_FILE).write_text(
        f"{card.rstrip()}\n\n## Lab version {candidate.number}\nPreference fine-tuned ({counts['method']}) from "
        f"version {candidate.parent} on {counts['train']} examples of listeners' feedback.\n",
        encoding="utf-8",
    )


def _measure_both(
    lab: Lab, production: Version, candidate: Version, test: list[PreferenceItem], family: Family,
    options: PreferOptions,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Both versions on production's held-out music (the lab's gate figures) and on the held-out feedback."""
    parent_dir = lab.registry.path(lab.model, production)
    heldout = lab.work / "heldout"
    shutil.rmtree(heldout, ignore_errors=True)
    shutil.copytree(parent_dir / HELDOUT, heldout)
    tokenized_for(heldout, json.loads((parent_dir / "tokenizer.json").read_text()))
    index_file = parent_dir / ORIGINALITY_FILE
    index = OriginalityIndex.load(index_file) if index_file.is_file() else None
    out = {}
    for side, version in (("production", production), ("candidate", candidate)):
        folder = lab.registry.path(lab.model, version)
        out[side] = {
            **measure(folder, heldout, None, index, options.gate),
            "preference_accuracy": preference_accuracy(load_checkpoint(folder, options.device).model, test),
        }
    return out


def preference_accuracy(model: torch.nn.Module, test: list[PreferenceItem]) -> float:
    """The share of held-out pairs whose liked song the model finds likelier per token than the other; a KTO
    set is paired liked × disliked. NaN without a pair."""
    matched = [(t.chosen, t.rejected) for t in test if t.rejected is not None]
    if not matched:
        liked = [t.chosen for t in test if t.desirable]
        matched = [(a, b.chosen) for a in liked for b in test if not b.desirable]
    if not matched:
        return float("nan")
    songs = list({id(s): s for pair in matched for s in pair}.values())
    per_token = {
        id(s): lp / (len(s.tokens) - s.start)
        for s, lp in zip(songs, reference_log_probs(model, songs), strict=True)
    }
    return sum(per_token[id(a)] > per_token[id(b)] for a, b in matched) / len(matched)


def preference_reasons(production: dict[str, Any], candidate: dict[str, Any], tolerance: float) -> list[str]:
    """The preference gates' reasons to reject (see the module's docstring)."""
    reasons = []
    before, after = production["preference_accuracy"], candidate["preference_accuracy"]
    if not after > before:  # NaN (no held-out pair) fails too
        reasons.append(
            f"preference accuracy on held-out feedback did not rise ({before:.3f} -> {after:.3f})"
            if before == before else "no held-out pair of liked and disliked songs to measure preference on"
        )  # fmt: skip
    for name, label in (("distinct_4grams", "distinct 4-gram share"), ("pitch_class_entropy",
                                                                         "pitch-class entropy")):  # fmt: skip
        if not candidate[name] >= production[name] * (1 - tolerance):
            reasons.append(
                f"samples' {label} fell from {production[name]:.3f} to {candidate[name]:.3f} (more than "
                f"{tolerance:.0%}): the candidate is collapsing onto fewer tunes"
            )
    return reasons


def _result(
    lab: Lab, decision: str, reasons: list[str], metrics: dict[str, Any], counts: dict[str, Any],
    candidate: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    result = {"model": lab.model, "candidate": candidate, "decision": decision, "reasons": reasons,
              "metrics": metrics, "examples": counts}  # fmt: skip
    lab.work.mkdir(parents=True, exist_ok=True)
    with (lab.work / PREFER_LOG).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({**result, "finished": time.time()}, default=str) + "\n")
    return result
