import numpy as np
import pytest
import torch

from conftest import corpus_path
from museforge.data.formats import load_score
from museforge.families.performance.model import PerformanceRNN, PerformanceRNNConfig, encode_controls
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.metrics.likelihood import NGramModel, evaluate_likelihood
from museforge.models.scoring import RecurrentScorer, WindowScorer
from museforge.tokenizers import build_tokenizer


@pytest.fixture(scope="module")
def chorale_ids():
    return build_tokenizer("remi").encode(load_score(corpus_path("bach/bwv66.6")), style="chorale").ids


def test_transformer_scores_equal_a_direct_forward_within_the_context(chorale_ids):
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.preset("tiny", 500)).eval()
    ids = chorale_ids[:100].astype(np.int64)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids).unsqueeze(0))
    expected = torch.log_softmax(logits[0, :-1], -1).gather(-1, torch.as_tensor(ids[1:]).unsqueeze(-1))
    np.testing.assert_allclose(WindowScorer(model).log_probs(ids), expected.squeeze(-1).numpy(), rtol=1e-5)


def test_long_sequences_slide_and_score_every_token_once(chorale_ids):
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.preset("tiny", 500)).eval()  # context 128
    ids = chorale_ids[:333].astype(np.int64)
    scores = WindowScorer(model).log_probs(ids)
    assert scores.shape == (332,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    # windows start at 0, 64, ..., 256; the last one scores ids[320:] (the tokens no earlier window reached)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids[256:]).unsqueeze(0))
    tail = (
        torch.log_softmax(logits[0, :-1], -1).gather(-1, torch.as_tensor(ids[257:]).unsqueeze(-1)).squeeze(-1)
    )
    np.testing.assert_allclose(scores[-13:], tail.numpy()[-13:], rtol=1e-5)


def test_scorer_plugs_into_the_likelihood_interface(chorale_ids):
    torch.manual_seed(0)
    rnn = PerformanceRNN(PerformanceRNNConfig(embed_dim=16, hidden_size=32, n_layers=1)).eval()
    perf = build_tokenizer("performance").encode(load_score(corpus_path("bach/bwv66.6"))).astype(np.int64)
    unset = evaluate_likelihood(RecurrentScorer(rnn), [perf])
    fixed = evaluate_likelihood(
        RecurrentScorer(rnn, controls=lambda a: encode_controls(3, None).expand(len(a), -1)), [perf]
    )
    assert unset.n_tokens == fixed.n_tokens == len(perf) - 1
    assert unset.nll != fixed.nll  # the controls reach the model
    # an untrained model is near uniform: its perplexity is about the vocabulary size
    assert 300 < unset.perplexity < 500
    ngram = NGramModel(3, 500).fit([chorale_ids.tolist()])
    assert evaluate_likelihood(ngram, [chorale_ids.tolist()]).nll < np.log(500)
