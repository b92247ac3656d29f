"""Preference fine-tuning: the losses against hand-computed values, sequence log-probabilities against the model
read token by token, and DPO / KTO on a synthetic preference (songs that use one token more) moving samples
towards it without lowering the chosen songs' likelihood."""

import math

import pytest
import torch

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.generation.decode import generate_transformer
from museforge.models.scoring import WindowScorer
from museforge.training import TrainConfig, Trainer
from museforge.training.preference import (
    PreferenceCollator,
    PreferenceConfig,
    PreferenceItem,
    PreferenceStep,
    ScoredSequence,
    collate_sequences,
    disable_dropout,
    dpo_loss,
    kto_loss,
    reference_log_probs,
    sequence_log_probs,
)

VOCAB, LIKED, NEW = 12, 7, 16  # a small vocabulary, the token the synthetic listener likes, tokens per song


def tiny(seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig.preset("tiny", vocab_size=VOCAB, dropout=0.1))


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_loss_is_the_formula_and_the_penalty_acts_only_below_the_reference():
    t = torch.tensor
    # chosen rose by 1, rejected fell by 2: margin 3, no penalty
    assert dpo_loss(t([-9.0]), t([-14.0]), t([-10.0]), t([-12.0]), 0.5, 50.0).item() == pytest.approx(
        -math.log(sigmoid(0.5 * 3))
    )
    # chosen fell by 1 while rejected fell by 4: plain DPO sees margin 3, DPOP subtracts 50 * 1
    plain = dpo_loss(t([-11.0]), t([-16.0]), t([-10.0]), t([-12.0]), 0.5, 0.0).item()
    penalised = dpo_loss(t([-11.0]), t([-16.0]), t([-10.0]), t([-12.0]), 0.5, 50.0).item()
    assert plain == pytest.approx(-math.log(sigmoid(1.5)))
    assert penalised == pytest.approx(-math.log(sigmoid(0.5 * (3 - 50))))


def test_kto_loss_is_the_formula_with_the_batch_kl_clipped_at_zero():
    policy, reference = torch.tensor([-9.0, -13.0]), torch.tensor([-10.0, -10.0])  # rewards +1, -3
    losses, z = kto_loss(policy, reference, torch.tensor([True, False]), 0.5, (1.0, 2.0))
    assert z.item() == 0.0  # the mean reward -1 is clipped
    assert losses.tolist() == pytest.approx([1 - sigmoid(0.5), 2 * (1 - sigmoid(1.5))])
    losses, z = kto_loss(torch.tensor([-8.0, -9.0]), reference, torch.tensor([True, True]), 1.0)
    assert z.item() == pytest.approx(1.5)
    assert losses.tolist() == pytest.approx([1 - sigmoid(0.5), 1 - sigmoid(-0.5)])


def test_sequence_log_probs_sum_the_sampled_tokens_alone_and_padding_changes_nothing():
    model = tiny().eval()
    torch.manual_seed(1)
    long = ScoredSequence(torch.randint(0, VOCAB, (30,)).tolist(), start=5)
    short = ScoredSequence(torch.randint(0, VOCAB, (9,)).tolist(), start=3)
    each = WindowScorer(model).log_probs(long.tokens)  # each[i] = ln p(tokens[i + 1] | tokens[: i + 1])
    with torch.no_grad():
        together = sequence_log_probs(model, collate_sequences([long, short]))
        alone = sequence_log_probs(model, collate_sequences([short]))
    assert together[0].item() == pytest.approx(each[long.start - 1 :].sum(), rel=1e-5)
    assert together[1].item() == pytest.approx(alone[0].item(), rel=1e-5)
    assert reference_log_probs(model, [long, short], batch_size=1) == pytest.approx(
        together.tolist(), rel=1e-5
    )
    with pytest.raises(ValueError, match="needs a prompt and a sampled token"):
        ScoredSequence([1, 2], start=2)


def samples(model: TransformerLM, n: int, seed: int) -> list[ScoredSequence]:
    out = generate_transformer(model, [0], NEW, num_samples=n, seed=seed)
    return [ScoredSequence(s, start=1) for s in out.sequences()]


def liked_share(seqs: list[ScoredSequence]) -> float:
    new = [t for s in seqs for t in s.tokens[s.start :]]
    return new.count(LIKED) / len(new)


def fine_tune(model: TransformerLM, items: list[PreferenceItem], config: PreferenceConfig, tmp_path) -> None:
    disable_dropout(model)
    train = TrainConfig(
        out_dir=str(tmp_path), epochs=100, max_steps=60, batch_size=8, lr=3e-3, warmup_steps=5,
        checkpoint_every=1000, log_every=10, progress=False,
    )  # fmt: skip
    Trainer(model, items, train, step_fn=PreferenceStep(config), collate_fn=PreferenceCollator()).fit()


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_fine_tuning_moves_samples_towards_the_liked_property(method, tmp_path):
    """A listener who likes songs that use token 7 more: the fine-tuned model samples it more, and the songs
    it preferred did not lose likelihood (DPOP's penalty; KTO by construction of its loss)."""
    model = tiny()
    before = samples(model, 64, seed=1)
    refs = reference_log_probs(model, before)
    ranked = sorted(zip(before, refs, strict=True), key=lambda p: liked_share([p[0]]))
    if method == "dpo":
        pairs = zip(ranked[:32], ranked[::-1][:32], strict=True)  # the least liked with the most liked
        items = [PreferenceItem(c, rc, r, rr) for (r, rr), (c, rc) in pairs]
    else:
        items = [PreferenceItem(s, rs, desirable=i >= 32) for i, (s, rs) in enumerate(ranked)]
    chosen = [i.chosen for i in items if i.desirable]
    fine_tune(model, items, PreferenceConfig(method=method), tmp_path)

    after = samples(model, 64, seed=2)
    fresh = samples(tiny(), 64, seed=2)  # what the untouched model draws with the same seed
    assert liked_share(after) > 1.5 * liked_share(fresh)  # about 2x (DPO) and 2x (KTO) on seeds 0-2
    old = sum(i.ref_chosen for i in items if i.desirable) / len(chosen)
    new = sum(reference_log_probs(model, chosen)) / len(chosen)
    assert new > old
