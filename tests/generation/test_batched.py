"""Dynamic batching: sequences handed in by several threads at once, each with its own prompt, budget, seed,
sampling settings, mask and stop rule, come out token for token as `generate_transformer` makes each alone;
rows join and leave at different steps and slide past the model's window; a hook's error ends its own row."""

import threading

import pytest
import torch

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.generation import generate_transformer
from museforge.generation.batched import BatchedDecoder

V = 40


@pytest.fixture(scope="module")
def lm() -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.preset("tiny", vocab_size=V, max_seq_len=32)).eval()


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
]


def alone(lm, prompt, budget, seed, settings):
    gen = torch.Generator().manual_seed(seed)
    return generate_transformer(lm, prompt, budget, generator=gen, **settings).sequences()[0]


def test_threads_decoding_together_get_the_tokens_each_gets_alone(lm):
    decoder = BatchedDecoder(lm)
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
        assert got[i] == alone(lm, *request), f"request {i}"
    late = decoder.decode([4, 4], 20, generator=torch.Generator().manual_seed(9))  # a row after a pause
    assert late.sequences()[0] == alone(lm, [4, 4], 20, 9, {})
    late.tokens[0, 0] = 1  # an ordinary tensor the caller may change (the REMI sampler does)


def test_an_error_in_one_rows_hook_ends_that_row_only(lm):
    decoder = BatchedDecoder(lm)
    outcome: dict[str, object] = {}

    def failing_stop(seqs):
        if seqs.shape[1] > 6:
            raise RuntimeError("listener went away")
        return torch.zeros(seqs.shape[0], dtype=torch.bool)

    def run(name: str, **settings) -> None:
        try:
            outcome[name] = decoder.decode([1, 2], 30, generator=torch.Generator().manual_seed(1), **settings)
        except RuntimeError as exc:
            outcome[name] = exc

    threads = [
        threading.Thread(target=run, args=("bad",), kwargs={"stop_fn": failing_stop}),
        threading.Thread(target=run, args=("good",)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert str(outcome["bad"]) == "listener went away"
    assert outcome["good"].sequences()[0] == alone(lm, [1, 2], 30, 1, {})
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder.decode([1], 0, generator=torch.Generator())
