"""The HF rollout engine: sampling layout, stops, and log-probs that match the trainer's."""

import torch
from transformers import DynamicCache

import rlxf.rollout.hf as hf
from rlxf.data import pack
from rlxf.data.templating import ChatEncoder
from rlxf.models import completion_logps
from rlxf.models.packing import use_packed_attention
from rlxf.models.tiny import tiny_llama, tiny_tokenizer
from rlxf.rollout import HFEngine, SamplingParams, cpu_decode

PROMPTS = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "what is two plus two?"}]]


def engine(seed=0):
    model = tiny_llama(seed=seed)
    use_packed_attention(model)
    return HFEngine(model, ChatEncoder(tiny_tokenizer(), max_length=256, max_prompt_length=128), batch_size=3)


def test_samples_are_prompt_major_and_cut_at_their_stop():
    rollout = engine().generate(PROMPTS, SamplingParams(max_new_tokens=12, n=3, temperature=1.0))
    assert rollout.prompt_index == [0, 0, 0, 1, 1, 1]
    assert rollout.logprobs.shape == rollout.mask.shape and rollout.mask.shape[0] == 6
    for tokens, reason, row in zip(rollout.completion_ids, rollout.stop_reasons, rollout.mask):
        assert int(row.sum()) == len(tokens) <= 12
        assert (reason == "eos") == (tokens[-1] == 2) and (reason == "length") == (
            len(tokens) == 12 and 2 not in tokens
        )
    assert rollout.timings["generate_tokens_per_second"] > 0


def test_engine_log_probs_equal_the_trainer_forward():
    policy = engine(seed=1)
    rollout = policy.generate(PROMPTS, SamplingParams(max_new_tokens=10, n=2, temperature=1.0))
    with torch.no_grad():
        trainer, _ = completion_logps(policy.model, pack(list(zip(rollout.prompt_ids, rollout.completion_ids))))
    engine_sums = (rollout.logprobs * rollout.mask).sum(-1)
    assert torch.allclose(engine_sums, trainer, atol=1e-4), (engine_sums, trainer)


def test_greedy_is_deterministic_and_stop_strings_end_completions():
    policy = engine(seed=2)
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    assert policy.generate(PROMPTS, greedy).completion_ids == policy.generate(PROMPTS, greedy).completion_ids
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0)
    torch.manual_seed(0)
    full = policy.generate(PROMPTS[:1], sampled)
    text = full.texts[0]
    assert len(text) >= 4 and full.stop_reasons == ["length"]  # this seed babbles for all 8 tokens
    stop = text[2:4]
    torch.manual_seed(0)  # same draws until the stop string appears
    stopped = policy.generate(PROMPTS[:1], SamplingParams(max_new_tokens=8, temperature=1.0, stop=(stop,)))
    assert stopped.stop_reasons == ["stop"] and stopped.texts[0] == text[: text.index(stop) + len(stop)]
    assert len(stopped.completion_ids[0]) < len(full.completion_ids[0])


def test_shared_prefill_changes_no_token_or_log_prob():
    """Prompts of different lengths (left padding), each sampled three times."""
    policy = engine(seed=3)
    plain = HFEngine(policy.model, policy.encoder, batch_size=6)
    plain._shared_prefill = lambda *args: None
    shared = HFEngine(policy.model, policy.encoder, batch_size=6)
    for sampling in (SamplingParams(max_new_tokens=10, n=3, temperature=0), SamplingParams(max_new_tokens=10, n=3)):
        torch.manual_seed(0)
        expected = plain.generate(PROMPTS, sampling)
        torch.manual_seed(0)
        got = shared.generate(PROMPTS, sampling)
        assert got.completion_ids == expected.completion_ids
        assert torch.allclose(got.logprobs, expected.logprobs, atol=1e-5)
    assert shared._shared_prefill(*_padded([[5, 6, 7], [8, 9]]), 11) is None  # nothing repeats: plain prefill


def test_growing_kv_cache_changes_no_token_or_log_prob(monkeypatch):
    """Room reserved 3 positions at a time, so 10 new tokens also re-reserve mid-generation;
    with and without the shared prefill (whose batch selection replaces the buffers)."""
    sampling = SamplingParams(max_new_tokens=10, n=3)
    caches = {"plain": lambda config, room: DynamicCache(config=config), "growing": hf.growing_cache}

    def generate(cache: str, shared_prefill: bool):
        policy = engine(seed=4)
        monkeypatch.setattr(hf, "growing_cache", lambda config, room: caches[cache](config, 3))
        if not shared_prefill:
            policy._shared_prefill = lambda *args: None
        torch.manual_seed(0)
        return policy.generate(PROMPTS, sampling)

    for shared_prefill in (True, False):
        plain, growing = generate("plain", shared_prefill), generate("growing", shared_prefill)
        assert growing.completion_ids == plain.completion_ids
        assert torch.equal(growing.logprobs, plain.logprobs)


def _padded(prompts):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    return prompts, ids, (ids != 0).long()


def test_rows_that_end_leave_the_batch_without_changing_the_others():
    """With per-prompt seeds, rows decoded together (some end early and leave the batch, the
    cache and the sampler) draw what each draws alone."""
    policy = engine(seed=5)
    prompts = PROMPTS + [[{"role": "user", "content": "count to three"}]]
    sampling = SamplingParams(max_new_tokens=16, n=3, temperature=1.0)
    together = HFEngine(policy.model, policy.encoder, batch_size=9).generate(prompts, sampling, seeds=[1, 2, 3])
    lengths = {len(c) for c in together.completion_ids}
    assert len(lengths) > 1 and min(lengths) < 16  # some rows did end first
    for i, prompt in enumerate(prompts):
        alone = policy.generate([prompt], sampling, seeds=[i + 1])
        assert alone.completion_ids == together.completion_ids[3 * i : 3 * i + 3]
        width = alone.logprobs.shape[1]
        assert torch.allclose(alone.logprobs, together.logprobs[3 * i : 3 * i + 3, :width], atol=1e-5)


def test_decode_shaped_products_are_the_plain_ones(monkeypatch):
    """Laid out for oneDNN or as W·xᵀ, a forward pass gives the plain model's logits, and the
    layers are plain again afterwards."""
    model = tiny_llama(seed=6)
    ids = torch.randint(3, 200, (3, 5))
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    laid_out, lay_out_one = [], cpu_decode._pack
    monkeypatch.setattr(cpu_decode, "_pack", lambda weight, rows: laid_out.append(weight) or lay_out_one(weight, rows))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        for lay_out in (True, False):
            with cpu_decode.decode_linears(model, rows=3, lay_out=lay_out):
                assert torch.allclose(model(input_ids=ids).logits, plain, atol=1e-5)
            assert len(laid_out) == linears  # each weight laid out once, and only when asked
    assert not any("forward" in vars(m) for m in model.modules())


def test_trainer_reference_and_sampler_agree_at_a_temperature_with_a_biased_head():
    """softmax((h W^T + b) / T): the temperature divides the logits, bias included. Dividing the
    hidden state instead gives softmax((h W^T) / T + b), which differs from the sampler's."""
    from rlxf.models.logprobs import token_logps
    from rlxf.models.reference import Reference

    policy = engine(seed=4)
    model = policy.model
    vocab, width = model.config.vocab_size, model.config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = torch.nn.Linear(width, vocab, bias=True)
        torch.nn.init.normal_(head.bias, std=2.0)
    model.lm_head = head
    model.config.tie_word_embeddings = False
    rollout = policy.generate(PROMPTS, SamplingParams(max_new_tokens=8, n=2, temperature=0.7))
    batch = pack(list(zip(rollout.prompt_ids, rollout.completion_ids)))
    sampled = rollout.logprobs[rollout.mask > 0]
    with torch.no_grad():
        trainer = token_logps(model, batch, temperature=0.7).values  # the chunked head
        with_entropy = token_logps(model, batch, temperature=0.7, with_entropy=True).values  # full logits
        reference = Reference(model, "", "float32", 0).token_logps(batch, 0.7)
    for computed in (trainer, with_entropy, reference):
        assert torch.allclose(computed, sampled, atol=1e-4), (computed - sampled).abs().max()
