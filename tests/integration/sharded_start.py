"""One rank of `test_a_sharded_rank_built_empty_computes_with_rank_0s_weights`, under torchrun:
rank 0 loads a tiny Llama (seed 3), the other rank builds it on the meta device; both shard it
and save the logits they then compute, sharded and after unsharding, to ``argv[1]``."""

import sys

import torch

from rlxf.models import load_causal_lm
from rlxf.parallel import distributed
from rlxf.train.data_parallel import TrainingForward

TOKENS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def main(out: str) -> None:
    distributed.init_from_environment()
    torch.set_num_threads(1)
    rank = distributed.rank()
    model = load_causal_lm("tiny-llama", seed=3, device="meta" if rank > 0 else None)
    assert all(p.is_meta for p in model.parameters()) == (rank > 0)
    sharded = TrainingForward(model, "fsdp")
    with torch.no_grad():
        logits = sharded(lambda m: m(TOKENS).logits)
        whole = sharded.whole_model()(TOKENS).logits
    torch.save({"sharded": logits, "whole": whole}, f"{out}/rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
