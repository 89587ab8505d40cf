"""Invariants: split batches, masked tokens, chunked log-softmax vs the plain one."""

import pytest
import torch

from rlxf.data import pack, pad
from rlxf.data.batching import pack_groups
from rlxf.losses import sequence_mean, token_mean
from rlxf.losses.preference import dpo
from rlxf.models import completion_logps, logprobs, reward_scores
from rlxf.models.logprobs import token_logps_from_hidden
from rlxf.models.packing import use_packed_attention
from rlxf.models.tiny import tiny_llama
from rlxf.parallel import distributed


def test_batch_split_across_two_ranks_sums_to_whole_batch_loss(monkeypatch):
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(8) for _ in range(4))
    batch = [5, 0, 7, 2, 3, 6, 1, 4]
    whole = sequence_mean(dpo(pc[batch], pr[batch], rc[batch], rr[batch], beta=0.1)[0], len(batch))
    parts, seen = [], []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        share = distributed.shard(batch)
        seen += share
        parts.append(sequence_mean(dpo(pc[share], pr[share], rc[share], rr[share], beta=0.1)[0], len(batch)))
    assert sorted(seen) == sorted(batch) and len(share) == 4
    assert torch.allclose(whole, parts[0] + parts[1])
    tokens = torch.tensor([3.0, 5.0, 2.0])
    assert torch.allclose(token_mean(tokens, 10), token_mean(tokens[:1], 10) + token_mean(tokens[1:], 10))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("kept_bytes", [0, 300, 10**6])  # chunks of 3 x 11 float64 logits: 264 bytes each
def test_chunked_token_logps_match_log_softmax_in_value_and_gradient(monkeypatch, kept_bytes, temperature):
    """Logits recomputed in backward, kept from forward for the first chunk only, or for all; at a
    temperature, log softmax(head(h) / T) with its bias."""
    monkeypatch.setattr(logprobs, "KEEP_PROBS_BYTES", kept_bytes)
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(5, 11, bias=True).double()
    targets = torch.randint(0, 11, (7,))
    ours = token_logps_from_hidden(hidden, head, targets, chunk=3, temperature=temperature)
    plain = torch.log_softmax(head(hidden) / temperature, -1).gather(1, targets[:, None]).squeeze(1)
    assert torch.allclose(ours, plain)
    weights = torch.randn(7, dtype=torch.float64)
    grads_plain = torch.autograd.grad((plain * weights).sum(), [hidden, head.weight, head.bias])
    for _ in range(2):  # a second backward through the same graph recomputes what the first used up
        grads_ours = torch.autograd.grad((ours * weights).sum(), [hidden, head.weight, head.bias], retain_graph=True)
        for a, b in zip(grads_ours, grads_plain):
            assert torch.allclose(a, b)


def _sequences():
    return [([1, 5, 9, 12], [40, 41, 2]), ([1, 7], [50, 51, 52, 53, 2]), ([1, 3, 3, 3, 3, 3], [60, 2])]


def plain_logps(model, prompt, reply):
    ids = torch.tensor([prompt + reply])
    logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    token_logps = logits.gather(1, ids[0, 1:, None]).squeeze(1)
    return token_logps[len(prompt) - 1 :].sum()


def test_completion_logps_equal_a_plain_forward_for_packed_and_padded_layouts():
    model = tiny_llama(seed=3).eval()
    sequences = _sequences()
    with torch.no_grad():
        expected = torch.stack([plain_logps(model, p, r) for p, r in sequences])
        padded, counts = completion_logps(model, pad(sequences, pad_token_id=0))
        with pytest.raises(ValueError, match="packed attention"):
            completion_logps(model, pack(sequences))
        use_packed_attention(model)
        packed, _ = completion_logps(model, pack(sequences))
    assert counts.tolist() == [3, 5, 2]
    for got in (padded, packed):
        assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_a_shared_prompt_gives_each_completion_its_own_log_probs():
    model = tiny_llama(seed=4).eval()
    groups = [([1, 5, 9], [[40, 41, 2], [50, 2], [60, 61, 62, 2]]), ([1, 7, 7, 7], [[70, 2], [71, 72, 2]])]
    with torch.no_grad():
        expected = torch.stack([plain_logps(model, p, c) for p, cs in groups for c in cs])
        use_packed_attention(model)
        batch = pack_groups(groups)
        shared, counts = completion_logps(model, batch)
    assert batch.num_tokens == 3 + 9 + 4 + 5  # each prompt laid down once
    assert counts.tolist() == [3, 2, 4, 2, 3]
    assert torch.allclose(shared, expected, atol=1e-5), (shared, expected)
    # gradients flow through the shared prompt exactly as through separate sequences
    model.train()
    shared_loss = completion_logps(model, pack_groups(groups))[0].sum()
    grad_shared = torch.autograd.grad(shared_loss, model.model.embed_tokens.weight)[0]
    separate_loss = completion_logps(model, pack([(p, c) for p, cs in groups for c in cs]))[0].sum()
    grad_separate = torch.autograd.grad(separate_loss, model.model.embed_tokens.weight)[0]
    assert torch.allclose(grad_shared, grad_separate, atol=1e-5)


def test_reward_scores_read_the_last_real_token_whatever_the_padding():
    model = tiny_llama(seed=5, reward_head=True).eval()
    short, long = [1, 5, 9, 2], [1, 7, 7, 7, 7, 7, 7, 2]
    with torch.no_grad():
        alone = reward_scores(model, torch.tensor([short]), torch.ones(1, 4, dtype=torch.long))
        batch = pad([(short, []), (long, [])], pad_token_id=0)
        together = reward_scores(model, batch.input_ids, batch.attention_mask)
        other_pad = pad([(short, []), (long, [])], pad_token_id=2)
        again = reward_scores(model, other_pad.input_ids, other_pad.attention_mask)
    assert torch.allclose(alone[0], together[0], atol=1e-5) and torch.allclose(together, again, atol=1e-6)
