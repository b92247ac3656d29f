"""Fill-in-the-middle over real pieces: the fill tokens extend the vocabulary without moving an id, a rearranged
sequence holds exactly the piece's tokens, and training windows keep their length."""

import numpy as np
import pytest
import symusic
import torch

from museforge.data.dataset import MAX_FILL_SPAN, FillInTheMiddle, FillTrack
from museforge.tokenizers.infill import arrange, arrange_track, fill_ids
from museforge.tokenizers.remi import FILL_TOKENS, RemiConfig, RemiTokenizer


@pytest.fixture(scope="module")
def remi() -> RemiTokenizer:
    return RemiTokenizer()


@pytest.fixture(scope="module")
def filling(remi) -> RemiTokenizer:
    return remi.with_fill_tokens()


def test_fill_tokens_come_after_every_other_id(remi, filling, scores, piece):
    assert filling.vocab_size == remi.vocab_size + len(FILL_TOKENS)
    assert [filling.token_name(i) for i in range(remi.vocab_size)] == [
        remi.token_name(i) for i in range(remi.vocab_size)
    ]
    assert [filling.token_name(i) for i in fill_ids(filling)] == [f"{t}_None" for t in FILL_TOKENS]
    enc = remi.encode(scores[piece], style="folk")
    assert np.array_equal(filling.encode(scores[piece], style="folk").ids, enc.ids)
    with_fills = np.concatenate([enc.ids, list(fill_ids(filling))])
    assert filling.decode(with_fills).note_num() == remi.decode(enc.ids).note_num()
    again = RemiTokenizer.from_state_dict(filling.state_dict())
    assert again.fill_ids == filling.fill_ids and again.vocab_size == filling.vocab_size


def test_a_tokenizer_without_fill_tokens_says_so(remi):
    with pytest.raises(ValueError, match="not trained to fill in"):
        fill_ids(remi)


@pytest.mark.parametrize("span", [(0, 0), (2, 4), (5, 7)])
def test_arrange_moves_the_bars_behind_the_rest_and_loses_nothing(filling, scores, span):
    enc = filling.encode(scores["chorale"], style="chorale")
    ids, starts = enc.ids.tolist(), enc.bar_starts.tolist()
    first, last = span
    hole, start, end = fill_ids(filling)
    prompt, middle = arrange(ids, starts, first, last, filling)

    cut_from, cut_to = starts[first], starts[last + 1]
    assert prompt[-1] == start and middle[-1] == end and middle[:-1] == ids[cut_from:cut_to]
    k = last - first + 1
    assert prompt[cut_from : cut_from + 2 * k] == [filling.bar_id, hole] * k
    restored = prompt[:cut_from] + middle[:-1] + prompt[cut_from + 2 * k : -1]
    assert restored == ids
    assert sum(t == filling.bar_id for t in prompt) == len(starts)  # every bar keeps its place


def test_arrange_refuses_bars_outside_the_piece(filling, scores):
    enc = filling.encode(scores["folk1"])
    with pytest.raises(ValueError, match="not inside"):
        arrange(enc.ids.tolist(), enc.bar_starts.tolist(), 0, len(enc.bar_starts), filling)


def test_training_windows_keep_their_length_and_end_with_the_filled_bars(filling, scores, piece):
    torch.manual_seed(0)
    ids = filling.encode(scores[piece], style="folk").ids.astype(np.int64)[:256]
    fim = FillInTheMiddle(filling, rate=1.0)
    hole, start, end = fill_ids(filling)
    for _ in range(20):
        out = fim(ids)
        assert len(out) == len(ids) and out.dtype == ids.dtype
        if np.array_equal(out, ids):  # too few bars in the window to leave a gap and a suffix
            assert (ids == filling.bar_id).sum() < 3
            continue
        assert out[-1] == end and (out == start).sum() == 1 and (out == end).sum() == 1
        holes = int((out == hole).sum())
        middle = out[int(np.flatnonzero(out == start)[0]) + 1 : -1]
        assert 1 <= holes <= MAX_FILL_SPAN and (middle == filling.bar_id).sum() == holes
        assert middle[0] == filling.bar_id


def test_the_rate_is_the_share_of_windows_rearranged(filling, scores):
    torch.manual_seed(1)
    ids = filling.encode(scores["chorale"]).ids.astype(np.int64)[:256]
    fim = FillInTheMiddle(filling, rate=0.3)
    changed = [not np.array_equal(fim(ids), ids) for _ in range(400)]
    assert 0.2 < np.mean(changed) < 0.4
    with pytest.raises(ValueError, match="rate"):
        FillInTheMiddle(filling, rate=0.0)


@pytest.fixture(scope="module")
def voices() -> RemiTokenizer:
    return RemiTokenizer(RemiConfig(use_programs=True, infill=True))


def notes(track: symusic.Track) -> list[tuple[int, int, int]]:
    return sorted((n.time, n.duration, n.pitch) for n in track.notes)


@pytest.mark.parametrize("name", ["chorale", "quartet", "palestrina"])
def test_a_voice_moved_behind_the_rest_holds_exactly_its_notes(voices, scores, name):
    """The prompt decodes to every other voice, note for note, and the middle to the voice left out."""
    enc = voices.encode(scores[name], style="chorale")
    whole = {t.program: notes(t) for t in voices.decode(enc.ids).tracks}
    start, end = fill_ids(voices)[1:]
    for program in sorted(whole):
        prompt, middle = arrange_track(enc.ids.tolist(), program, voices)
        assert prompt[-1] == start and middle[-1] == end
        assert sum(t == voices.bar_id for t in middle) == len(enc.bar_starts)
        rest = {t.program: notes(t) for t in voices.decode(prompt).tracks}
        assert rest == {p: n for p, n in whole.items() if p != program}
        assert {t.program: notes(t) for t in voices.decode(middle).tracks} == {program: whole[program]}


def test_track_fill_windows_keep_their_length_and_single_voices_stay(voices, scores):
    torch.manual_seed(0)
    fill = FillTrack(voices, rate=1.0)
    start = fill_ids(voices)[1]
    chorale = voices.encode(scores["chorale"], style="chorale").ids[:400].astype(np.int64)
    out = fill(chorale)
    assert len(out) == len(chorale) and start in out
    assert np.array_equal(fill(out), out)  # already rearranged
    folk = voices.encode(scores["folk1"], style="folk").ids.astype(np.int64)
    assert np.array_equal(fill(folk), folk)
    with pytest.raises(ValueError, match="use_programs"):
        FillTrack(RemiTokenizer().with_fill_tokens())
