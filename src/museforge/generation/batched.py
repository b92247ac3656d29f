"""Dynamic batching of `generate_transformer`: sequences asked for by different callers (threads), each with its
own prompt, budget, generator, sampling settings, mask and stop rule, decode together in one loop.

A row joins the running batch whenever it arrives (its prompt is read alone, as `generate_transformer` reads
it, and copied into a row of a `StackedCache`) and leaves when it stops. Between, each step is one pass of the
model over all rows (`IncrementalDecoder.stacked`: n-row products, attention over the stacked cache masked
to each row's length), then each row's own mask and stop rule, and one sampling pass per group of rows with
the same temperature/top-k/top-p, each row drawing from its own generator (`sample_rows`: the procedure
`generate_transformer` uses, row by row the same floats).

What "the same song as alone" means here. The sampling is exact: the same logits and generator give the same
token, whatever the other rows. The logits are not bit for bit: a BLAS chooses its kernel and summation
order by the product's shape, so the n-row products (and attention over a padded cache) round a row's last
bits differently than the one-row products of a sequence decoded alone. Measured on this project's CPU (AMD
EPYC, torch's CPU BLAS): a 1-row ``F.linear`` (a matrix-vector kernel) differs from the same row in any
2..64-row product in every row, by ~1e-6; 2- and 3-row products differ from 5-and-more-row ones; from 5
rows on, on one thread, a row's numbers did not depend on the row count or its place (with 2 threads a
5-row product's edge rows did), which no BLAS promises; masked attention over the padded cache differs from
attention over the row's own cache in 15 of 20 rows, by ~1e-7. So no batch size can give every row the
numbers of the one-row path on every machine, short of decoding alone. A sampled token can only change
where those last bits decide the draw (two tokens' races within about a millionth of each other: rare; in
`benchmarks/bench_batched_decode.py` all 20 fp32 songs, 8,636 tokens, came out identical), and from there
that song goes its own way; everywhere else a batched song is token for token the song its seed gives alone.
The loop runs in a thread of its own; the hooks (a stop rule that reports progress, say) run there too, and
what they raise ends their row only, in its caller.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from museforge.generation.decode import CachedLM, Generated, MaskFn, StopFn, _check_args, _Loop
from museforge.generation.sampling import sample_rows
from museforge.models.modules import KVCache, StackedCache

MAX_ROWS = 64  # rows decoded at once; more wait for a free row
_RUNNING: weakref.WeakSet[BatchedDecoder] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Stop every decoder's thread before the interpreter finalizes: a daemon thread still inside torch then
    aborts the process ("terminate called without an active exception")."""
    for decoder in list(_RUNNING):
        decoder.close()


class _Row:
    """One caller's sequence: its loop (batch 1), its settings' group and how many tokens it drew."""

    def __init__(self, loop: _Loop, max_new_tokens: int) -> None:
        self.loop, self.max_new_tokens = loop, max_new_tokens
        self.group = (loop.temperature, loop.top_k, loop.top_p)  # rows sampled in one pass share these
        self.drawn = 0  # tokens drawn
        self.result: Generated | None = None
        self.error: BaseException | None = None
        self.ended = threading.Event()

    def allowed(self) -> Tensor | None:
        """The row's mask of its next token [V] (None: no mask hook). A row in the batch has not finished, so
        this is `_Loop.allowed` without the finished rows' part."""
        loop = self.loop
        return None if loop.mask_fn is None else loop.mask_fn(loop.ids).view(-1)

    def push(self, token: int) -> bool:
        """Append the drawn token; whether the row is done (its stop rule, or its budget). `_Loop.push` for
        one unfinished row, without its per-row tensor ops: a batch step pushes every row."""
        loop = self.loop
        loop.tokens[0, loop.t] = token
        loop.t += 1
        self.drawn += 1
        if loop.stop_fn is not None and bool(loop.stop_fn(loop.ids)[0]):
            loop.ends[0] = loop.t
            loop.finished[0] = True
            return True
        return self.drawn == self.max_new_tokens

    def end(self, error: BaseException | None = None) -> None:
        self.error = error
        if error is None:
            self.result = self.loop.result()
        self.ended.set()


class BatchedDecoder:
    """Decodes the sequences that `decode` calls from any number of threads hand it, together."""

    def __init__(self, model: CachedLM, precision: str = "fp32", max_rows: int = MAX_ROWS) -> None:
        model.eval()  # a served model: the loop never trains it
        self.model, self.precision, self.max_rows = model, precision, max_rows
        self.window = model.config.max_seq_len
        self.device = next(model.parameters()).device
        self._step = model.incremental_decoder()
        self._cache = StackedCache(
            len(self._step.layers), self._step.n_heads, self._step.head_dim, self.window
        )
        self._rows: list[_Row] = []  # row j of the stacked cache is self._rows[j]
        self._logits: Tensor | None = None  # [n, V] each row's next-token logits
        self._waiting: list[_Row] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
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
            if self._closed:
                raise RuntimeError("the batched decoder is closed")
            self._waiting.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="museforge-batch", daemon=True)
                self._thread.start()
                _RUNNING.add(self)
            self._wake.notify()
        row.ended.wait()
        if row.error is not None:
            raise row.error
        assert row.result is not None  # cloned here, out of the loop's inference mode: an ordinary tensor
        return Generated(tokens=row.result.tokens.clone(), lengths=row.result.lengths.clone())

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop once the rows it holds ended (waiting rows are still decoded); later calls fail."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._rows and not self._waiting:
                        if self._closed:
                            return
                        self._wake.wait()
                    joining = self._waiting[: self.max_rows - len(self._rows)]
                    del self._waiting[: len(joining)]
                for row in joining:
                    self._join(row)
                if self._rows:
                    self._advance()

    def _read(self, ids: Tensor) -> tuple[Tensor, KVCache]:
        """Read ``ids`` [1, t] alone into a fresh cache: (logits of the next token [1, V], cache)."""
        logits, cache = self.model(ids, use_cache=True)
        return logits[:, -1], cache

    def _join(self, row: _Row) -> None:
        """Read the row's prompt alone, as `generate_transformer` does, into a new row of the stacked cache."""
        try:
            logits, cache = self._read(row.loop.ids[:, -self.window :])
        except Exception as exc:  # its caller hears why
            row.end(exc)
            return
        self._cache.put(cache)
        self._rows.append(row)
        self._logits = logits if self._logits is None else torch.cat([self._logits, logits.to(self._logits)])

    def _leave(self, j: int) -> None:
        """Take row ``j`` out of the batch (the last row moves into its place)."""
        last = len(self._rows) - 1
        self._cache.drop(j)
        assert self._logits is not None
        if j != last:
            self._rows[j] = self._rows[last]
            self._logits[j] = self._logits[last]
        self._rows.pop()
        self._logits = self._logits[:last]

    def _masks(self) -> Tensor | None:
        """Each row's mask of its next token [n, V] (None when no row has one); a row whose mask hook fails
        ends with its error, and gets an all-True mask for this step's draw, which it leaves unused."""
        assert self._logits is not None
        vocab = self._logits.shape[1]
        if all(r.loop.mask_fn is None for r in self._rows):
            return None
        every = torch.ones(vocab, dtype=torch.bool)
        masks = []
        for row in self._rows:
            try:
                allowed = row.allowed()
            except Exception as exc:
                row.end(exc)
                allowed = None
            masks.append(every if allowed is None else allowed)
        return torch.stack(masks).to(self._logits.device)  # [n, V]

    def _sample(self, masks: Tensor | None) -> list[int | None]:
        """Each row's next token (None for a row that ended): one pass per group of rows with the same
        settings; a group whose pass fails (a mask that allows nothing) is drawn row by row, so only the
        row at fault ends."""
        assert self._logits is not None
        groups: dict[tuple, list[int]] = {}
        for j, row in enumerate(self._rows):
            if not row.ended.is_set():
                groups.setdefault(row.group, []).append(j)
        tokens: list[int | None] = [None] * len(self._rows)
        for (temperature, top_k, top_p), members in groups.items():
            try:
                drawn = self._draw(members, temperature, top_k, top_p, masks)
            except Exception:
                drawn = []
                for j in members:
                    try:
                        drawn += self._draw([j], temperature, top_k, top_p, masks)
                    except Exception as exc:
                        self._rows[j].end(exc)
                        drawn.append(None)
            for j, token in zip(members, drawn, strict=True):
                tokens[j] = token
        return tokens

    def _draw(
        self,
        members: list[int],
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        masks: Tensor | None,
    ) -> list[int | None]:
        """The tokens of rows ``members``, sampled in one pass (the whole batch without copying, when it is)."""
        assert self._logits is not None
        everyone = len(members) == len(self._rows)
        index = None if everyone else torch.tensor(members, device=self._logits.device)
        logits = self._logits if index is None else self._logits[index]
        mask = masks if masks is None or index is None else masks[index]
        gens = [self._rows[j].loop.gen for j in members]
        return sample_rows(logits, gens, temperature, top_k, top_p, mask).tolist()

    def _advance(self) -> None:
        """Draw each row's next token, end the rows that stopped, and feed the others' tokens through the
        model in one pass (a row whose context slides first reads its last half window again alone)."""
        tokens = self._sample(self._masks())
        for row, token in zip(self._rows, tokens, strict=True):
            if token is None or row.ended.is_set():
                continue
            try:
                done = row.push(token)
            except Exception as exc:  # its stop hook failed
                row.end(exc)
                continue
            if done:
                row.end()
        for j in reversed(range(len(self._rows))):
            if self._rows[j].ended.is_set():
                self._leave(j)
        for j, row in enumerate(self._rows):
            if self._cache.lengths[j] + 1 > self.window:
                self._guard_slide(j, row)
        for j in reversed(range(len(self._rows))):
            if self._rows[j].ended.is_set():
                self._leave(j)
        if not self._rows:
            return
        ids = torch.cat([row.loop.tokens[:, row.loop.t - 1] for row in self._rows])  # [n] the new tokens
        try:
            self._logits = self._step.stacked(ids, self._cache)  # [n, V]
        except Exception as exc:  # no row can go on: each caller hears why
            for j in reversed(range(len(self._rows))):
                self._rows[j].end(exc)
                self._leave(j)
            return
        self.largest_batch = max(self.largest_batch, len(self._rows))

    def _guard_slide(self, j: int, row: _Row) -> None:
        """The row reached the model's window: read its last half window again, all but the newest token, into
        its row; this step's pass then feeds that token (`generate_transformer` reads the half window, newest
        token included, in one forward: the same numbers up to rounding)."""
        try:
            _, cache = self._read(row.loop.ids[:, -(self.window // 2) : -1])
        except Exception as exc:
            row.end(exc)
            return
        self._cache.replace(j, cache)
