"""Weights broadcast from a trainer to a worker over a standalone gloo group (two threads here)."""

import threading

import pytest
import torch

from rlxf.parallel.weight_broadcast import describe, free_address, live_trainable, open_group, receive


def test_a_broadcast_sets_the_workers_trainable_parameters_in_place():
    torch.manual_seed(0)
    trainer, worker = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    trainer.bias.requires_grad_(False)  # only trainable parameters travel
    bias_before = worker.bias.detach().clone()
    host, port = free_address()
    sent = describe(live_trainable(trainer))

    def worker_side():
        receive(open_group(host, port, 1, 2, "gloo"), dict(worker.named_parameters()), sent)

    thread = threading.Thread(target=worker_side)
    thread.start()
    group = open_group(host, port, 0, 2, "gloo")
    for tensor in live_trainable(trainer).values():
        group.broadcast(tensor.detach(), 0).wait()
    thread.join(timeout=60)
    assert torch.equal(worker.weight, trainer.weight)
    assert torch.equal(worker.bias, bias_before)


def test_a_worker_whose_parameters_differ_refuses_before_receiving():
    worker = dict(torch.nn.Linear(4, 3).named_parameters())
    with pytest.raises(
        RuntimeError,
        match=r"weight broadcast: the worker's weight is \(3, 4\) float32, the trainer sends \(5, 4\) float32",
    ):
        receive(None, worker, [("weight", (5, 4), "float32")])
    with pytest.raises(
        RuntimeError, match=r"the worker's weight is \(3, 4\) float32, the trainer sends \(3, 4\) bfloat16"
    ):
        receive(None, worker, [("weight", (3, 4), "bfloat16")])
    with pytest.raises(RuntimeError, match="the worker's lm_head.weight is missing"):
        receive(None, worker, [("lm_head.weight", (5, 4), "float32")])
