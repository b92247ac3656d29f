"""`museforge train`, `generate` (built on first run from the families' request types), and MuseMorphose's
`transfer`, `interpolate` and `evaluate-transfer`."""

import contextlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from museforge.cli_show import console
from museforge.defaults import MAX_GUIDANCE

if TYPE_CHECKING:
    from museforge.families.loaded import LoadedModel

from museforge.cli.shell import (
    LAZY_COMMANDS,
    Threads,
    _fail,
    _json_object,
    _threads,
    app,
)


def train(
    model: Annotated[str, typer.Option(help="Model family.")],
    data: Annotated[
        Path | None, typer.Option(help="A dataset folder made by `museforge data build`.")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Size: one of the family's presets (tiny, small, base).")
    ] = "small",
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<family>-<preset>).")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder exactly where it stopped.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default from the preset's TrainConfig).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per-process batch size.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after N epochs without a better validation loss.")
    ] = None,
    min_delta: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="For --patience, an evaluation counts as better only if it lowers the loss by more than this "
            "(default 0; OUT/best still keeps any gain).",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Optimizer steps between rewrites of OUT/last (default 500; it is rewritten each epoch too).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, data order and augmentation.")] = 0,
    transpose: Annotated[
        int,
        typer.Option(
            min=0, max=12, help="Random transposition of training windows by up to ± this many semitones."
        ),
    ] = 6,
    loader_workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes per trainer.")] = 0,
    infill: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of training windows rearranged to fill in the middle (bars written knowing what follows); "
            "0: none. With --init, the checkpoint's vocabulary gains the fill tokens. REMI Transformer only.",
        ),
    ] = 0.0,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this checkpoint (fine-tuning): its weights and its model config, which --model-config "
            "may change; the preset then gives the training recipe."
        ),
    ] = None,
    model_config: Annotated[
        str | None,
        typer.Option(
            help="Model config overrides of the preset as JSON, e.g. '{\"binary_neurons\": true}' for MuseGAN."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Arithmetic: fp32, bf16 (autocast; fp32 weights) or auto (bf16 on CUDA, fp32 on a CPU). Default: "
            "the preset's (auto; MuseGAN fp32). bf16 also speeds up a CPU with native bf16 (AVX-512 BF16, AMX)."
        ),
    ] = None,
    threads: Threads = None,
) -> None:
    """Train a model family on a dataset; checkpoints go to OUT/best and OUT/last, the log to OUT/log.csv.

    Runs on several GPUs or machines unchanged under torchrun (e.g. `torchrun --nproc-per-node 2 -m museforge
    train ...`).
    """
    from museforge.families import get_family
    from museforge.families.training import resume_run, start_run
    from museforge.training.distributed import select_device

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's trainers on this machine
    _threads(threads, share=local_processes)
    dev = str(select_device(device))
    try:
        if resume is not None:
            result = resume_run(resume, device=dev, max_steps=max_steps)
            out = resume
        else:
            if data is None:
                raise _fail("--data is required (or --resume RUN_DIR)")
            out = out or Path("runs") / f"{get_family(model).name}-{preset}"
            model_overrides = _json_object(model_config, "--model-config") if model_config else None
            overrides = {
                k: v
                for k, v in {
                    "max_steps": max_steps,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "lr": lr,
                    "patience": patience,
                    "min_delta": min_delta,
                    "checkpoint_every": checkpoint_every,
                    "seed": seed,
                    "num_workers": loader_workers,
                    "precision": precision,
                }.items()
                if v is not None
            }
            result = start_run(
                model,
                data,
                preset,
                out,
                device=dev,
                train_overrides=overrides,
                max_shift=transpose,
                init_from=init,
                model_overrides=model_overrides,
                infill=infill,
            )
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"[bold green]trained[/] {out}: step {result.step}, epoch {result.epoch}; "
        f"best validation loss {result.best_eval_loss}; checkpoints in {out / 'best'} and {out / 'last'}"
    )


def _numbered(path: Path, i: int, n: int) -> Path:
    """song.mid -> song-1.mid ... when several samples are written."""
    return path if n == 1 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")


OPTION_ALIASES = {"style": ("--genre",), "walk": ("--morph",)}  # earlier spellings people already use


def _request_options() -> list[inspect.Parameter]:
    """``generate``'s model options: every family's request fields, each once, typed as a person types it and
    with each family's default in its help. The family of the chosen model checks them."""
    from museforge.families import FAMILIES

    seen: dict[str, list[tuple[str, Any, Any]]] = {}
    for family in FAMILIES:
        for name, field in family.request.model_fields.items():
            if name != "operation":
                seen.setdefault(name, []).append((family.label, field, field.default))
    params = []
    for name, takers in seen.items():
        field = takers[0][1]
        kind = next((t for t in (int, float) if field.annotation in (t, t | None)), str)
        defaults = "; ".join(
            f"{label}: {'unset' if default is None else default}" for label, _, default in takers
        )
        flag = "--" + name.replace("_", "-")
        option = typer.Option(flag, *OPTION_ALIASES.get(name, ()), help=f"{field.description} [{defaults}]")
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
            )
        )
    return params


def generate(
    out: Annotated[Path, typer.Option(help="MIDI file to write (song-1.mid, song-2.mid ... with several).")],
    model: Annotated[
        str | None,
        typer.Option(help="A shipped model name (`museforge models list`) or a checkpoint folder."),
    ] = None,
    primer: Annotated[
        Path | None,
        typer.Option(
            "--primer",
            "--source",
            help="The piece to continue, fill in (--infill) or re-style (MIDI, MusicXML, ABC, kern).",
        ),
    ] = None,
    accompany: Annotated[
        Path | None,
        typer.Option(help="Accompany this music file (MuseGAN): its --tracks are kept as they are."),
    ] = None,
    operation: Annotated[
        str | None,
        typer.Option(
            help="generate, continue, or a family's own (restyle with --primer as the piece, accompany)."
        ),
    ] = None,
    audio: Annotated[
        Path | None, typer.Option(help="Also render audio (.wav, .flac, .ogg or .mp3) with the GM SoundFont.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="Weights while sampling: fp32, fp16 (REMI Transformer, MuseMorphose; faster on a CPU) or auto "
            "(fp16 where it agrees with fp32 on a probe)."
        ),
    ] = "auto",
    threads: Threads = None,
    **options: Any,
) -> None:
    """Sample music from a trained model and write it as MIDI (and audio). The model options are its family's:
    an option another family takes is refused with the list of those this model takes."""
    import time

    from museforge.families import DEFAULT_MODEL
    from museforge.families.serving import generate_song, get_model
    from museforge.training.distributed import select_device

    start = time.perf_counter()
    chosen = _threads(threads)
    try:
        if audio is not None and audio.suffix.lower() not in (".wav", ".flac", ".ogg", ".mp3"):
            raise ValueError(f"--audio must end in .wav, .flac, .ogg or .mp3, got {audio.name}")
        loaded = get_model(model or DEFAULT_MODEL, select_device(device), precision)
        songs = generate_song(loaded, primer=primer, accompany=accompany, operation=operation, **options)
    except (ValueError, OSError) as exc:  # bad options, unknown model/style, unreadable checkpoint/primer
        raise _fail(str(exc)) from exc
    for i, song in enumerate(songs):
        _report_song(
            song, _numbered(out, i, len(songs)), None if audio is None else _numbered(audio, i, len(songs))
        )
    if loaded.precision_decision is not None:
        console.print(f"[dim]precision {loaded.precision_decision}[/]")
    console.print(
        f"model {loaded.name} ({songs[0].params.get('precision', 'fp32')}, {chosen}), seed "
        f"{songs[0].params['seed']}, {len(songs)} song(s) in "
        f"{time.perf_counter() - start:.1f} s (sampling {songs[0].seconds:.1f} s)"
    )


def _report_song(song: Any, path: Path, audio: Path | None) -> None:
    """Write one song (and its audio), and say what was written and whether it copies its training data."""
    path = song.save_midi(path)
    notes = sum(len(t.notes) for t in song.score.tracks)
    made = f"{song.new_tokens} tokens" if song.tokens else f"{len(song.score.tracks)} tracks"
    console.print(f"[bold green]wrote[/] {path} ({notes} notes, {made})")
    if audio is not None:
        from museforge.audio import render_to_file

        audio.parent.mkdir(parents=True, exist_ok=True)
        render_to_file(song.score, audio)
        console.print(f"[bold green]wrote[/] {audio}")
    check = song.originality
    if check is not None and check.near_copy:
        console.print(
            f"[bold yellow]warning:[/] {path} is a near-copy of the training data (longest copied run "
            f"{check.result.longest_run} notes, {check.result.copied_share:.0%} of notes in copied runs)"
        )


_GENERATE_OWN = [p for p in inspect.signature(generate).parameters.values() if p.kind is not p.VAR_KEYWORD]


def _command(name: str, callback: Callable[..., None], parameters: list[inspect.Parameter]) -> click.Command:
    """A typer command over ``callback`` with these parameters in place of those it was written with."""
    from typer.main import get_command_from_info
    from typer.models import CommandInfo

    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    info = CommandInfo(name=name, callback=callback)
    return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=None)


def _generate_command() -> click.Command:
    """``generate`` with its model options read from the families' request types (pydantic), built when the
    command runs or shows its help, so the other commands and ``museforge --help`` do not pay for them."""
    return _command("generate", generate, _GENERATE_OWN + _request_options())


def _train_command() -> click.Command:
    """``train`` with the registry's family names in ``--model``'s help, the first as its default; built when
    run, as the registry imports every family's request type."""
    from museforge.families import family_names

    names = family_names()
    model = inspect.Parameter(
        "model",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=names[0],
        annotation=Annotated[
            str,
            typer.Option(
                help=f"Model family: {', '.join(names)} (or another spelling of one, e.g. performance-rnn)."
            ),
        ],
    )
    own = inspect.signature(train).parameters.values()
    return _command("train", train, [model if p.name == "model" else p for p in own])


LAZY_COMMANDS.update(
    generate=("Sample music from a trained model and write it as MIDI (and audio).", _generate_command),
    train=("Train a model family on a dataset.", _train_command),
)


def _bar_list(text: str | None) -> list[int] | None:
    """``5-8`` or ``1,3,5-8`` (1-based, inclusive) as 0-based bar indices."""
    if text is None:
        return None
    bars: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"--bars must look like 5-8 or 1,3,5-8 (1-based), got {text!r}") from None
        if first < 1 or last < first:
            raise ValueError(f"--bars ranges must be 1-based and ascending, got {part!r}")
        bars.extend(range(first - 1, last))
    return bars


def _shift_or_classes(text: str | None, label: str) -> int | list[int] | None:
    """``+2``/``-1`` (a shift) or ``3,3,5,5`` (explicit classes for the selected bars)."""
    if text is None:
        return None
    text = text.strip()
    try:
        if text[:1] in "+-" and "," not in text:
            return int(text)
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--{label} is a shift like +2 or -1, or classes like 3,3,5,5; got {text!r}"
        ) from None


RestyleModel = Annotated[
    str | None,
    typer.Option(
        help="A MuseMorphose checkpoint folder or shipped model (default: the first shipped one that can re-style)."
    ),
]


def _model_for(operation: str, model: str | None) -> str:
    """The model asked for, or the first shipped model whose family can do ``operation``."""
    if model is not None:
        return model
    from museforge.families import get_family
    from museforge.models.zoo import ModelNotFoundError, list_models

    try:
        infos = list_models()
    except ModelNotFoundError as exc:
        raise ValueError(f"no shipped model can {operation}: {exc}; pass --model") from exc
    for info in infos:
        with contextlib.suppress(ValueError):  # a checkpoint of a family this version does not know
            if any(o.name == operation for o in get_family(info.family).operations):
                return info.name
    raise ValueError(f"no shipped model can {operation}: pass --model")


FROM_REQUEST = "Default and bounds: the model's request type, as for generate."
SampleStyle = Annotated[str | None, typer.Option(help="Style token to lead with, e.g. folk.")]
SampleCandidates = Annotated[
    int | None,
    typer.Option(help=f"Samples per bar; the one nearest the asked rhythm/polyphony is kept. {FROM_REQUEST}"),
]
Seed = Annotated[int | None, typer.Option(help="Seed; the same seed gives the same result.")]


def _sampling_request(loaded: "LoadedModel", operation: str, **given: Any) -> Any:
    """The sampling options of `transfer` and `interpolate`, checked and filled by the model's family's request
    type for ``operation``: the bounds and defaults that `generate` and the API use (a `RequestError` names a
    bad one); the seed is drawn when none is given."""
    from museforge.families import get_family
    from museforge.models.zoo import model_info

    family = get_family(loaded.family)
    request = family.parse({**given, "operation": operation})
    return family.resolve(request, model_info(loaded.path, loaded.name))


@app.command("transfer")
def transfer(
    piece: Annotated[Path, typer.Argument(help="Music to transform (MIDI, MusicXML, ABC, kern).")],
    out: Annotated[Path, typer.Option(help="MIDI file to write.")],
    rhythm: Annotated[
        str | None,
        typer.Option(help="Rhythmic-intensity shift (+2, -1) or classes per selected bar (3,3,5)."),
    ] = None,
    polyphony: Annotated[
        str | None, typer.Option(help="Polyphony shift (+1, -2) or classes per selected bar (1,1,2).")
    ] = None,
    bars: Annotated[
        str | None, typer.Option(help="Bars to change, 1-based: 5-8 or 1,3,5-8 (default: all).")
    ] = None,
    keep_others: Annotated[
        bool, typer.Option(help="Keep the bars outside --bars exactly as they are.")
    ] = True,
    parts: Annotated[
        str | None,
        typer.Option(
            help=f"A piece of several parts: each (re-play every part on its own) or together. {FROM_REQUEST}"
        ),
    ] = None,
    model: RestyleModel = None,
    style: SampleStyle = None,
    temperature: Annotated[float | None, typer.Option(help=f"Sampling temperature. {FROM_REQUEST}")] = None,
    top_p: Annotated[float | None, typer.Option(help=f"Nucleus mass. {FROM_REQUEST}")] = None,
    candidates: SampleCandidates = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            help="Amplify the asked change of classes against the piece's own by this much (0: the model "
            f"alone; truer control, a little less like the input, twice the time). {FROM_REQUEST}"
        ),
    ] = None,
    seed: Seed = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="Weights while sampling: fp32, fp16 or auto (fp16 where it agrees with fp32).")
    ] = "auto",
    threads: Threads = None,
) -> None:
    """Style transfer (MuseMorphose): re-generate a piece with shifted rhythm/polyphony classes, keeping its
    melody and harmony."""
    import time

    from museforge.families.musemorphose.sample import restyle_song
    from museforge.families.serving import get_model
    from museforge.training.distributed import select_device

    start = time.perf_counter()
    chosen = _threads(threads)
    try:
        chosen_bars = _bar_list(bars)
        shifts = {
            "rhythm": _shift_or_classes(rhythm, "rhythm"),
            "polyphony": _shift_or_classes(polyphony, "polyphony"),
        }
        given = {"style": style, "temperature": temperature, "top_p": top_p, "candidates": candidates}
        given |= {} if parts is None else {"parts": parts}
        for name, value in shifts.items():
            given[f"{name}_shift" if isinstance(value, int) else name] = value
        loaded = get_model(_model_for("restyle", model), select_device(device), precision)
        request = _sampling_request(loaded, "restyle", seed=seed, guidance=guidance, **given)
        (song,) = restyle_song(
            loaded,
            piece,
            rhythm=shifts["rhythm"],
            polyphony=shifts["polyphony"],
            bars=chosen_bars,
            keep_other_bars=keep_others,
            parts=request.parts,
            style=request.style,
            seed=request.seed,
            temperature=request.temperature,
            top_p=request.top_p,
            candidates=request.candidates,
            guidance=request.guidance,
        )
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    path = song.save_midi(out)
    asked = song.params.get("part_attributes") or [{"part": "", "attributes": song.params["attributes"]}]
    classes = "; ".join(
        f"{p['part'] + ': ' if p['part'] else ''}rhythm {[r for r, _ in p['attributes']]}, "
        f"polyphony {[q for _, q in p['attributes']]}"
        for p in asked
    )
    console.print(
        f"[bold green]wrote[/] {path} ({song.params['source_bars']} bars; {classes}; seed {song.params['seed']}; "
        f"{song.params['precision']}; {chosen}) in {time.perf_counter() - start:.1f} s"
    )
    if loaded.precision_decision is not None:
        console.print(f"[dim]precision {loaded.precision_decision}[/]")
    check = song.originality
    if check is not None and check.near_copy:
        console.print(
            f"[bold yellow]warning:[/] the re-styled bars are a near-copy of the training data (longest copied "
            f"run {check.result.longest_run} notes)"
        )


@app.command("interpolate")
def interpolate(
    a: Annotated[Path, typer.Argument(help="First piece.")],
    b: Annotated[Path, typer.Argument(help="Second piece.")],
    out: Annotated[Path, typer.Option(help="Folder for step-01.mid ... step-N.mid.")],
    steps: Annotated[int, typer.Option(min=2, help="Pieces from A to B, both ends included.")] = 5,
    method: Annotated[str, typer.Option(help="slerp or lerp.")] = "slerp",
    model: RestyleModel = None,
    style: SampleStyle = None,
    candidates: SampleCandidates = None,
    seed: Seed = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Threads = None,
) -> None:
    """Interpolate between two pieces' per-bar latents (MuseMorphose)."""
    from museforge.families.musemorphose.decode import interpolate as morph
    from museforge.families.serving import get_model
    from museforge.training.distributed import select_device

    _threads(threads)
    try:
        loaded = get_model(_model_for("restyle", model), select_device(device))
        request = _sampling_request(loaded, "generate", style=style, candidates=candidates, seed=seed)
        results = morph(
            loaded.checkpoint.model,
            loaded.tokenizer,
            a,
            b,
            steps=steps,
            method=method,
            style=request.style,
            seed=request.seed,
            candidates=request.candidates,
        )
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    for i, result in enumerate(results, 1):
        path = result.save_midi(out / f"step-{i:02d}.mid")
        console.print(f"[bold green]wrote[/] {path}")


@app.command("evaluate-transfer")
def evaluate_transfer(
    data: Annotated[Path, typer.Option(help="A built dataset with a REMI cache (its test split is used).")],
    model: RestyleModel = None,
    pieces: Annotated[
        int, typer.Option(min=1, help="Test pieces drawn at random for control/fidelity.")
    ] = 40,
    segments: Annotated[int, typer.Option(min=1, help="Test segments scored for perplexity.")] = 300,
    candidates: Annotated[
        int, typer.Option(min=1, max=16, help="Samples per bar; the one nearest the asked classes is kept.")
    ] = 1,
    guidance: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=MAX_GUIDANCE,
            help="Amplify the shifts by this much (see `transfer --guidance`; 0: the paper's way).",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for the draw and the sampling.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Threads = None,
) -> None:
    """MuseMorphose's evaluation: control ρ and leak (shifts -3..+3), fidelity to the input, perplexity."""
    import numpy as np
    from rich.table import Table

    from museforge.data.manifest import load_manifest
    from museforge.families.musemorphose.evaluate import PAPER, evaluate_transfer, reconstruction_nll
    from museforge.families.musemorphose.model import MuseMorphose
    from museforge.families.serving import get_model
    from museforge.training.distributed import select_device

    _threads(threads)
    try:
        loaded = get_model(_model_for("restyle", model), select_device(device))
        net, tok = loaded.checkpoint.model, loaded.tokenizer
        if not isinstance(net, MuseMorphose):
            raise ValueError(f"model {loaded.name} is a {loaded.family}, not a MuseMorphose")
        records = load_manifest(data, "test")
        order = np.random.default_rng(seed).permutation(len(records))[:pieces]
        chosen = [records[i].midi_path(data) for i in order]
        result = evaluate_transfer(net, tok, chosen, seed=seed, candidates=candidates, guidance=guidance)
        result["likelihood"] = reconstruction_nll(net, tok, data, "test", max_segments=segments)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    table = Table(
        "attribute", "ρ", "ρ paper", "leak", "leak paper", "inherent leak", "excess leak", "chroma sim.",
        "groove sim.",
    )  # fmt: skip
    for a in ("rhythm", "polyphony"):
        fid = result["fidelity"][a]
        table.add_row(
            a, f"{result['rho'][a]:.3f}", f"{PAPER['rho'][a]}", f"{result['leak'][a]:.3f}",
            f"{PAPER['leak'][a]}", f"{result['leak_inherent'][a]:.3f}", f"{result['leak_excess'][a]:.3f}",
            f"{fid['chroma']:.3f}", f"{fid['groove']:.3f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "inherent leak: the leak of the requested classes themselves (what exact control shows on this music); "
        "excess leak = leak - inherent leak"
    )
    nll = result["likelihood"]
    console.print(f"test reconstruction NLL {nll['nll']:.4f} nats/token, perplexity {nll['perplexity']:.3f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"[bold green]wrote[/] {out}")
