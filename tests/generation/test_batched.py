"""Dynamic batching: sequences handed in by several threads at once, each with its own prompt, budget, seed,
sampling settings, mask and stop rule, decode in one pass per step and come out as `generate_transformer` makes
each alone; rows join and leave at different steps and slide past the model's window; a hook's error ends its
own row.

What holds on any machine, and is asserted so: the sampling of rows together is exactly the sampling of each
row alone (`sample_rows`), and a row's logits in a stacked step equal its logits alone up to float rounding
(an n-row product may round a row's last bits differently from a one-row product, BLAS by BLAS). Whole
sequences are compared token for token in float64, where that rounding (~1e-16) cannot decide a draw; in
float32 it could, about once in a million steps (`museforge.generation.batched`).
"""

import threading

import pytest
import torch

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.generation import generate_transformer
from museforge.generation.batched import BatchedDecoder
from museforge.generation.sampling import sample, sample_rows
from museforge.models.modules import StackedCache

V = 40


@pytest.fixture(scope="module")
def lm() -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.preset("tiny", vocab_size=V, max_seq_len=32)).eval()


@pytest.fixture(scope="module")
def lm64(lm) -> TransformerLM:
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.preset("tiny", vocab_size=V, max_seq_len=32)).eval()
    model.load_state_dict(lm.state_dict())
    return model.double()


def no_odd_after_odd(prefix: torch.Tensor) -> torch.Tensor:
    """A mask that depends on the row's own last token."""
    allowed = torch.ones(prefix.shape[0], V, dtype=torch.bool)
    allowed[prefix[:, -1] % 2 == 1, 1::2] = False
    return allowed


def stop_at(token: int):
    return lambda seqs: seqs[:, -1] == token


REQUESTS = [  # prompt, budget, seed, settings: lengths that cross the 32-token window, early stops, filters
    ([1], 50, 0, {}),
    ([3, 4, 5, 6, 7], 12, 1, {"temperature": 0.7, "top_k": 5}),
    ([2, 9], 70, 2, {"top_p": 0.8, "mask_fn": no_odd_after_odd}),
    ([5] * 20, 30, 3, {"stop_fn": stop_at(7), "pad_id": 0}),
    ([8, 1, 8], 1, 4, {"temperature": 1.3}),
    ([6], 40, 5, {"stop_fn": stop_at(3), "mask_fn": no_odd_after_odd, "top_k": 10}),
    ([7, 7], 45, 6, {"top_p": 0.8, "stop_fn": stop_at(11)}),  # the same settings as request 2: one pass
    ([2], 25, 7, {"temperature": 0}),
]


def alone(lm, prompt, budget, seed, settings):
    gen = torch.Generator().manual_seed(seed)
    return generate_transformer(lm, prompt, budget, generator=gen, **settings).sequences()[0]


@pytest.mark.parametrize(
    "settings",
    [{}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.6}, {"temperature": 1.4, "top_k": 9, "top_p": 0.9}],
)
def test_rows_sampled_together_draw_what_each_draws_alone(settings):
    torch.manual_seed(1)
    logits = torch.randn(7, V) * 3
    mask = torch.rand(7, V) > 0.3
    mask[:, 0] = True
    for step in range(5):  # the generators move on alike too
        together = sample_rows(logits, [torch.Generator().manual_seed(10 * j) for j in range(7)], mask=mask,
                               **settings)  # fmt: skip
        for j in range(7):
            gen = torch.Generator().manual_seed(10 * j)
            assert together[j] == sample(logits[j : j + 1], gen, mask=mask[j], **settings)[0], (step, j)
        logits = logits.roll(step + 1, dims=1)


def test_a_stacked_step_gives_each_row_its_own_logits(lm):
    """Rows at different lengths, joining and leaving, against each row decoded alone with its own cache."""
    torch.manual_seed(2)
    prompts = [torch.randint(0, V, (1, n)) for n in (3, 9, 1, 14, 6)]
    step, single = lm.incremental_decoder(), lm.incremental_decoder()
    with torch.inference_mode():
        stacked = StackedCache(len(step.layers), step.n_heads, step.head_dim, 32)
        own = []
        for p in prompts:
            _, cache = lm(p, use_cache=True)
            stacked.put(cache)
            own.append(lm(p, use_cache=True)[1])
        rows = list(range(len(prompts)))  # which prompt each stacked row holds
        for i in range(8):
            if i == 3:  # row 1 leaves: the last row takes its place
                stacked.drop(1)
                rows[1] = rows.pop()
            ids = torch.randint(0, V, (len(rows),))
            got = step.stacked(ids, stacked)
            for j, r in enumerate(rows):
                want = single(ids[j : j + 1], own[r])[0]
                torch.testing.assert_close(got[j], want, rtol=1e-4, atol=1e-5)
            assert stacked.lengths == [own[r].length for r in rows]


def test_threads_decoding_together_get_the_tokens_each_gets_alone(lm64):
    decoder = BatchedDecoder(lm64)
    got: dict[int, list[int]] = {}
    start = threading.Barrier(len(REQUESTS))

    def ask(i: int) -> None:
        prompt, budget, seed, settings = REQUESTS[i]
        start.wait()  # all at once, so they share steps
        out = decoder.decode(prompt, budget, generator=torch.Generator().manual_seed(seed), **settings)
        got[i] = out.sequences()[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(REQUESTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert decoder.largest_batch > 1  # they did share steps
    for i, request in enumerate(REQUESTS):
        assert got[i] == alone(lm64, *request), f"request {i}"
    late = decoder.decode([4, 4], 20, generator=torch.Generator().manual_seed(9))  # a row after a pause
    assert late.sequences()[0] == alone(lm64, [4, 4], 20, 9, {})
    late.tokens[0, 0] = 1  # an ordinary tensor the caller may change (the REMI sampler does)
    decoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        decoder.decode([1], 3, generator=torch.Generator())


def test_an_error_in_one_rows_hook_ends_that_row_only(lm64):
    decoder = BatchedDecoder(lm64)
    outcome: dict[str, object] = {}

    def failing_stop(seqs):
        if seqs.shape[1] > 6:
            raise RuntimeError("listener went away")
        return torch.zeros(seqs.shape[0], dtype=torch.bool)

    def nothing_allowed(prefix):
        return torch.zeros(prefix.shape[0], V, dtype=torch.bool)

    def run(name: str, **settings) -> None:
        try:
            outcome[name] = decoder.decode([1, 2], 30, generator=torch.Generator().manual_seed(1), **settings)
        except (RuntimeError, ValueError) as exc:
            outcome[name] = exc

    threads = [
        threading.Thread(target=run, args=("bad",), kwargs={"stop_fn": failing_stop}),
        threading.Thread(target=run, args=("empty",), kwargs={"mask_fn": nothing_allowed}),
        threading.Thread(target=run, args=("good",)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert str(outcome["bad"]) == "listener went away"
    assert "allows no token" in str(outcome["empty"])
    assert outcome["good"].sequences()[0] == alone(lm64, [1, 2], 30, 1, {})
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder.decode([1], 0, generator=torch.Generator())
