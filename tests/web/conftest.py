"""The web tests' world: a models folder with tiny models trained here on real music (a REMI Transformer with
chorale/folk styles, trained to fill in bars too, and an originality index of its training pieces, a Performance
RNN, and a MuseMorphose on the same pieces), and an app on a real SQLite store in a temporary var folder."""

import re
import time
from pathlib import Path

import music21
import numpy as np
import pytest
import symusic
import torch
from fastapi.testclient import TestClient

from museforge.data.dataset import FillInTheMiddle
from museforge.data.formats import list_units, load_score, read_unit
from museforge.data.musemorphose import SegmentCollator, make_segment
from museforge.families.musemorphose.loss import VAEStep
from museforge.families.musemorphose.model import MuseMorphose, MuseMorphoseConfig
from museforge.families.performance.model import PerformanceRNN, PerformanceRNNConfig
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import clear_model_cache
from museforge.metrics.originality import OriginalityIndex
from museforge.models.checkpoint import save_checkpoint
from museforge.models.zoo import ORIGINALITY_FILE
from museforge.tokenizers import build_tokenizer
from museforge.training import TrainConfig, Trainer
from museforge.web import Settings, create_app
from museforge.web.security import CSRF_HEADER

REMI = build_tokenizer("remi")
FILLING = REMI.with_fill_tokens()  # the served REMI model can fill in bars
PERF = build_tokenizer("performance")


def _train(model, windows, out: Path, epochs: int, **trainer) -> None:
    cfg = TrainConfig(
        out_dir=str(out / "run"), batch_size=16, epochs=epochs, lr=5e-3, warmup_steps=5, progress=False,
        checkpoint_every=100_000,
    )  # fmt: skip
    Trainer(model, windows, cfg, **trainer).fit()
    model.eval()


def _bar_segments(scores_by_style, config: MuseMorphoseConfig) -> list[dict]:
    """MuseMorphose training segments: ``n_bars`` bars every 2 bars of each piece, led by its style token."""
    segments = []
    for style, score in scores_by_style:
        enc = REMI.encode(score)
        ends = [*enc.bar_starts[1:].tolist(), len(enc.ids)]
        for w in range(0, len(enc.bar_starts) - config.n_bars + 1, 2):
            starts = enc.bar_starts[w : w + config.n_bars]
            ids = enc.ids[starts[0] : ends[w + config.n_bars - 1]]
            seg = make_segment(ids, starts - starts[0], REMI, REMI.style_ids[style], config.max_bar_tokens)
            if len(seg.dec_ids) <= config.max_dec_len:
                segments.append(seg.__dict__)
    return segments


@pytest.fixture(scope="session")
def models_folder(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    chorales = [load_score(music21.corpus.getWork(n)) for n in ("bach/bwv66.6", "bach/bwv7.7")]
    folk = [
        read_unit(u).score for u in list_units(Path(music21.corpus.getWork("essenFolksong/altdeu10")))[:3]
    ]
    seqs = [REMI.encode(s, style="chorale").ids for s in chorales] + [
        REMI.encode(s, style="folk").ids for s in folk
    ]
    tokens = torch.as_tensor(np.concatenate([np.append(s, REMI.eos_id) for s in seqs]).astype(np.int64))
    windows = [tokens[i : i + 64] for i in range(0, len(tokens) - 64, 8)]
    torch.manual_seed(0)
    fim = FillInTheMiddle(FILLING, rate=1.0)
    windows += [torch.as_tensor(fim(w.numpy())) for w in windows[::2]]
    remi = TransformerLM(TransformerConfig.preset("tiny", vocab_size=FILLING.vocab_size, dropout=0.0))
    _train(remi, windows, root, epochs=4)
    ckpt = save_checkpoint(
        root / "remi-transformer", remi, tokenizer=FILLING.state_dict(), step=1, metrics={}
    )
    (ckpt / "MODEL_CARD.md").write_text("# Tiny chorale/folk Transformer for tests\n", encoding="utf-8")
    index = OriginalityIndex.build(chorales + folk, source="test pieces")
    index.save(ckpt / ORIGINALITY_FILE)

    ids = PERF.encode(chorales[0]).astype(np.int64)
    perf_windows = [{"input_ids": torch.as_tensor(ids[i : i + 65])} for i in range(0, len(ids) - 65, 16)]
    torch.manual_seed(0)
    perf = PerformanceRNN(PerformanceRNNConfig(embed_dim=16, hidden_size=32, n_layers=1))
    _train(perf, perf_windows, root, epochs=2)
    save_checkpoint(root / "performance-rnn", perf, tokenizer=PERF.state_dict(), step=1, metrics={})

    config = MuseMorphoseConfig.preset("tiny", REMI.vocab_size, dropout=0.0)
    pieces = [("chorale", s) for s in chorales] + [("folk", s) for s in folk]
    segments = _bar_segments(pieces, config)
    torch.manual_seed(0)
    morph = MuseMorphose(config)
    _train(morph, segments, root, epochs=10, step_fn=VAEStep(config), collate_fn=SegmentCollator(REMI.pad_id))
    ckpt = save_checkpoint(root / "musemorphose", morph, tokenizer=REMI.state_dict(), step=1, metrics={})
    (ckpt / "MODEL_CARD.md").write_text("# Tiny chorale/folk MuseMorphose for tests\n", encoding="utf-8")
    index.save(ckpt / ORIGINALITY_FILE)
    torch.set_num_threads(threads)
    return root


def make_settings(var: Path, models: Path, **kw) -> Settings:
    base = {"var_dir": var, "models_dir": models, "workers": 1, "torch_threads": 1, "max_upload_mb": 0.5}
    return Settings(_env_file=None, **{**base, **kw})


@pytest.fixture
def settings(tmp_path, models_folder) -> Settings:
    clear_model_cache()
    return make_settings(tmp_path / "var", models_folder)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def api_token(client: TestClient) -> dict:
    """The CSRF header API writes need, for the client's session."""
    return {CSRF_HEADER: client.get("/api/v1/auth/session").json()["csrf_token"]}


def wait_job(client: TestClient, job_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}?wait=10").json()  # answers when the job changes
        if job["status"] in ("done", "failed"):
            return job
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


def finished_job(client: TestClient, headers: dict, body: dict) -> dict:
    """POST a job and wait for it; it must be accepted and end done."""
    r = client.post("/api/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    done = wait_job(client, r.json()["id"])
    assert done["status"] == "done", done
    return done


def song_midi(client: TestClient, job_json: dict) -> tuple[dict, symusic.Score]:
    """A finished job's first song and its MIDI as a score."""
    song = client.get(job_json["song_urls"][0]).json()
    return song, symusic.Score.from_midi(client.get(song["urls"]["midi"]).content)


def upload(client: TestClient, headers: dict, name: str, data: bytes) -> dict:
    """Upload a file through the API; it must be accepted."""
    r = client.post(
        "/api/v1/uploads", files={"file": (name, data, "application/octet-stream")}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()


def csrf(html: str) -> str:
    """The CSRF token a page's form carries."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
