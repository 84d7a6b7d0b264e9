"""Distributed training on CPU (gloo): 2 processes end with identical weights, rank 0 alone writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from zoo import train as T
from tests.conftest import phantom_store
from tests.zoo.train.conftest import TINY

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = phantom_store(tmp_path_factory.mktemp("ddp"), frames=4, shape=(29, 25), coils=2, seed=2,
                        salt=b"ddp-tests")
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, store: str, out: str) -> None:
    from safetensors.torch import save_file

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    run = T.resolve_run_config(store, yaml_sections={"model": {"name": "sms-crnn", "config": TINY}},
                               overrides={"epochs": 1, "max_steps": 2, "val_fraction": 0.34, "device": "cpu"})
    r = T.fit(run, out, quiet=True)
    save_file({k: v.contiguous() for k, v in r.model.state_dict().items()}, f"{out}-rank{rank}.safetensors")


def test_two_ranks_gloo_identical_weights(store, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, free_port(), store, str(out)), nprocs=2, join=True)
    w0, w1 = (load_file(f"{out}-rank{r}.safetensors") for r in (0, 1))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # rank 0 wrote the checkpoint (its weights are the ranks' common weights) and one log row
    from zoo.checkpoint import load_checkpoint

    model, meta = load_checkpoint(out / "checkpoints" / "last")
    assert all(torch.equal(v, w0[k]) for k, v in model.state_dict().items())
    assert meta["training"]["world_size"] == 2 and meta["training"]["step"] == 2
    assert len((out / "log.csv").read_text().strip().splitlines()) == 2
    # the 3 val examples were shared out between the ranks (2 + 1) and gathered, none twice
    assert meta["metrics"]["val"]["psnr"]["n"] == 3 and meta["data"]["n_val"] == 3


def test_torchrun_cli(store, tmp_path):
    """The documented launch: ``torchrun --nproc-per-node 2 -m cli.main train ...``."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: sms-crnn, config: {n_filters: 4, n_iterations: 1}}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cli.main",
           "train", "--data", store, "--config", str(cfg), "--max-steps", "1", "--val-fraction", "0.34",
           "--out", str(tmp_path / "run"), "-q"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert (tmp_path / "run" / "checkpoints" / "last.safetensors").is_file()
    assert "done: epoch 1, step 1" in p.stdout and p.stdout.count("done:") == 1  # rank 0 alone reports
