"""Dynamic batching of `generate_transformer`: sequences asked for by different callers (threads), each with its
own prompt, budget, generator, sampling settings, mask and stop rule, decode together in one loop.

Each sequence is one row with its own batch-1 KV cache, so a row joins the running batch whenever it arrives
(its prompt is read alone, as `generate_transformer` reads it) and leaves when it stops; between, every step
feeds all rows through `IncrementalDecoder.rows`. A row is sampled with its own generator and hooks, and the
model's numbers for it do not depend on the other rows, so a caller gets exactly the tokens that
`generate_transformer` gives for the same arguments and one sample. The loop runs in a thread of its own; the
hooks (a stop rule that reports progress, say) run there too, and what they raise ends their row only, in
its caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from museforge.generation.decode import CachedLM, Generated, MaskFn, StopFn, _check_args, _Loop
from museforge.models.modules import KVCache

MAX_ROWS = 64  # rows decoded at once; more wait for a free row


class _Row:
    """One caller's sequence: its loop (batch 1), cache, next logits and how many tokens it drew."""

    def __init__(self, loop: _Loop, max_new_tokens: int) -> None:
        self.loop, self.max_new_tokens = loop, max_new_tokens
        self.cache: KVCache | None = None
        self.last: Tensor | None = None  # [1, V] logits of its next token
        self.drawn = 0
        self.result: Generated | None = None
        self.error: BaseException | None = None
        self.ended = threading.Event()

    def end(self, error: BaseException | None = None) -> None:
        self.error = error
        if error is None:
            self.result = self.loop.result()
        self.ended.set()


class BatchedDecoder:
    """Decodes the sequences that `decode` calls from any number of threads hand it, together."""

    def __init__(self, model: CachedLM, max_rows: int = MAX_ROWS) -> None:
        model.eval()  # a served model: the loop never trains it
        self.model, self.max_rows = model, max_rows
        self.window = model.config.max_seq_len
        self.device = next(model.parameters()).device
        self._step = model.incremental_decoder()
        self._waiting: list[_Row] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.largest_batch = 0  # the most rows one step decoded (what a deployment's batches reach)

    def decode(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        *,
        generator: torch.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        mask_fn: MaskFn | None = None,
        stop_fn: StopFn | None = None,
        pad_id: int = 0,
    ) -> Generated:
        """`generate_transformer` of one sample, decoded in the shared batch; blocks until the row ends."""
        _check_args(max_new_tokens, 1, pad_id, self.model.config.vocab_size)
        ids = torch.as_tensor([list(prompt)], dtype=torch.long, device=self.device)  # [1, t]
        if ids.shape[1] == 0:
            raise ValueError("prompt must hold at least one token (e.g. a start-of-sequence token)")
        loop = _Loop(ids, max_new_tokens, generator, temperature, top_k, top_p, mask_fn, stop_fn, pad_id)
        row = _Row(loop, max_new_tokens)
        with self._wake:
            self._waiting.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="museforge-batch", daemon=True)
                self._thread.start()
            self._wake.notify()
        row.ended.wait()
        if row.error is not None:
            raise row.error
        assert row.result is not None  # cloned here, out of the loop's inference mode: an ordinary tensor
        return Generated(tokens=row.result.tokens.clone(), lengths=row.result.lengths.clone())

    def _run(self) -> None:
        rows: list[_Row] = []
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not rows and not self._waiting:
                        self._wake.wait()
                    joining = self._waiting[: self.max_rows - len(rows)]
                    del self._waiting[: len(joining)]
                for row in joining:
                    self._guard(row, self._read_prompt)
                rows = [r for r in rows + joining if not r.ended.is_set()]
                rows = self._advance(rows)

    def _guard(self, row: _Row, work: Callable[[_Row], None]) -> None:
        """Run ``work(row)``; a failure ends that row with its error, raised in its caller."""
        try:
            work(row)
        except Exception as exc:
            row.end(exc)

    def _read_prompt(self, row: _Row) -> None:
        """Read the row's prompt alone into its cache, as `generate_transformer` does."""
        logits, row.cache = self.model(row.loop.ids[:, -self.window :], use_cache=True)
        row.last = logits[:, -1]

    def _slide(self, row: _Row) -> None:
        """The row reached the model's window: read its last half window again into a fresh cache."""
        logits, row.cache = self.model(row.loop.ids[:, -(self.window // 2) :], use_cache=True)
        row.last = logits[:, -1]

    def _draw(self, row: _Row) -> None:
        assert row.last is not None
        row.loop.step(row.last)
        row.drawn += 1

    def _advance(self, rows: list[_Row]) -> list[_Row]:
        """Draw each row's next token, end the rows that stopped, and feed the others' tokens through the
        model in one step (a row whose context slides reads its window again instead)."""
        stepping = []
        for row in rows:
            self._guard(row, self._draw)
            if row.ended.is_set():
                continue
            if row.loop.done or row.drawn == row.max_new_tokens:
                row.end()
            elif row.cache is not None and row.cache.length + 1 > self.window:
                self._guard(row, self._slide)
            else:
                stepping.append(row)
        if stepping:
            try:
                ids = torch.cat([r.loop.tokens[:, r.loop.t - 1] for r in stepping])  # [B] the new tokens
                logits = self._step.rows(ids, [r.cache for r in stepping])  # [B, V]
            except Exception as exc:  # no row can go on: each caller hears why
                for row in stepping:
                    row.end(exc)
                return [r for r in rows if not r.ended.is_set()]
            self.largest_batch = max(self.largest_batch, len(stepping))
            for j, row in enumerate(stepping):
                row.last = logits[j : j + 1]
        return [r for r in rows if not r.ended.is_set()]
