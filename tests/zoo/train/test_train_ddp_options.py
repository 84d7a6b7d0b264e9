"""Gradient accumulation under DDP (gloo, 2 CPU processes): the micro-batches before a step's last
skip the all-reduce (``no_sync``), and the step's gradient is still the mean over every rank's
examples -- the gradient of the same examples in one batch per rank."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from zoo import train as T
from tests.conftest import phantom_store
from tests.zoo.train.conftest import TINY
from tests.zoo.train.test_ddp import free_port


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = phantom_store(tmp_path_factory.mktemp("ddp-acc"), frames=4, shape=(29, 25), coils=2, seed=2,
                        salt=b"ddp-accumulate")
    return str(out)


def _worker(rank: int, world: int, ports: list[int], store: str, out: str) -> None:
    from safetensors.torch import save_file
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    torch.set_num_threads(1)
    for port, (name, over) in zip(ports, [("batch", {"batch_size": 2}), ("acc", {"batch_size": 1, "accumulate": 2})]):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world))
        grads = {}

        def hook(optimizer, args, kwargs):
            if not grads:  # the first step's (all-reduced) gradients
                params = [p for g in optimizer.param_groups for p in g["params"]]
                grads.update({f"g{i}": p.grad.detach().clone() for i, p in enumerate(params)})

        handle = register_optimizer_step_pre_hook(hook)
        run = T.resolve_run_config(store, yaml_sections={"model": {"name": "sms-crnn", "config": TINY}},
                                   overrides={"epochs": 1, "val_fraction": 0.34, "device": "cpu", **over})
        r = T.fit(run, f"{out}-{name}", quiet=True)
        handle.remove()
        save_file({**grads, **{f"w.{k}": v.contiguous() for k, v in r.model.state_dict().items()}},
                  f"{out}-{name}-rank{rank}.safetensors")


def test_accumulation_under_ddp(store, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, [free_port(), free_port()], store, str(out)), nprocs=2, join=True)
    got = {(n, r): load_file(f"{out}-{n}-rank{r}.safetensors") for n in ("batch", "acc") for r in (0, 1)}
    for name in ("batch", "acc"):  # the ranks agree, bit for bit
        a, b = got[(name, 0)], got[(name, 1)]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    batch, acc = got[("batch", 0)], got[("acc", 0)]
    grads = [k for k in batch if k.startswith("g")]
    assert grads
    for k in grads:
        torch.testing.assert_close(acc[k], batch[k], rtol=1e-4, atol=1e-7)
    log = (tmp_path / "run-acc" / "steps.csv").read_text().splitlines()
    assert len(log) == 2  # header + 1 step: 3 examples padded to 2 per rank, 2 micro-batches of 1
