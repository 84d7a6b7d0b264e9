"""``generate`` on a real dask.distributed cluster with 2 worker processes on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import zarr

from synth.dataset.config import SimConfig
from synth.dataset.generate import FAULT_ENV, generate, read_manifest
from synth.dataset.splits import parse_split
from synth.dataset.store import Store
from synth.errors import StoreExistsError

SALT = b"generate-tests"
CFG = SimConfig(sms=2, coils=3, accel=2, acs=4, seed=3)


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
        with Client(lc) as client:
            yield lc, client


@pytest.fixture(scope="module")
def patients(tmp_path_factory) -> Path:
    """Four phantom patients, one folder each, 3 slices x 6 frames."""
    from synth.io.phantom import PhantomSpec, write_phantom

    root = tmp_path_factory.mktemp("patients")
    for p in range(4):
        write_phantom(root / f"P{p}", PhantomSpec(n_slices=3, n_frames=6, acquired=(36, 30), matrix=(40, 40), seed=p),
                      patient=f"PAT{p}")
    return root


def files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def run(root, out, cluster=None, config=CFG, **kw):
    sched = cluster[0].scheduler_address if cluster else None
    return generate(root, str(out), config, salt=SALT, scheduler=sched, **kw)


@pytest.fixture(scope="module")
def reference(patients, cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    res = run(patients, out, cluster, split=parse_split("train=0.5,val=0.25,test=0.25"))
    return out, res


def test_reference_run(reference):
    out, res = reference
    assert res.planned == 12 and res.written == 12 and not res.failed  # 4 patients x C(3,2)
    st = Store.open(out)
    assert st.complete().all() and st.attrs["generator"]["command"] == "generate"
    assert res.workers == 2
    # the k-means phase depends on scikit-learn's version, the coil maps and FFTs on SciPy's
    from importlib.metadata import version

    gen = st.attrs["generator"]
    assert gen["scikit-learn"] == version("scikit-learn") and gen["scipy"] == version("scipy")


def test_one_worker_equals_two_workers(patients, reference, tmp_path):
    out = tmp_path / "one.zarr"
    res = run(patients, out, None, split=parse_split("train=0.5,val=0.25,test=0.25"), workers=1)
    assert res.workers == 1 and res.written == 12
    assert files(out) == files(reference[0])


def test_patient_level_split(reference):
    st = Store.open(reference[0])
    by_patient = defaultdict(set)
    for ex in st.attrs["examples"]:
        for src in ex["sources"]:
            by_patient[src["patient"]].add(ex["split"])
    assert len(by_patient) == 4
    assert all(len(s) == 1 for s in by_patient.values())  # never one patient in two splits
    assert st.attrs["split"]["spec"] == "train=0.5,val=0.25,test=0.25"


def test_rerun_complete_store_is_noop(patients, reference, cluster):
    out = reference[0]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    res = run(patients, out, cluster, split=parse_split("train=0.5,val=0.25,test=0.25"))
    assert res.already == 12 and res.written == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_different_parameters_refused(patients, reference, cluster):
    with pytest.raises(StoreExistsError, match="params differ.*coils"):
        run(patients, reference[0], cluster, config=CFG.replace(coils=2),
            split=parse_split("train=0.5,val=0.25,test=0.25"))


def test_resume_after_partial_loss(patients, reference, cluster, tmp_path):
    """Examples whose markers are missing (killed writers) are redone; the result equals a full run."""
    import shutil

    out = tmp_path / "partial.zarr"
    shutil.copytree(reference[0], out)
    root = zarr.open_group(str(out), mode="r+")
    for i in (1, 5, 6):
        root["complete"][i] = False
        root["kspace"][i, 0] = np.zeros(root["kspace"].shape[2:], np.complex64)  # half-written data
    res = run(patients, out, cluster, split=parse_split("train=0.5,val=0.25,test=0.25"))
    assert res.already == 9 and res.written == 3
    assert files(out) == files(reference[0])


def test_worker_death_is_retried(patients, reference, cluster, tmp_path):
    """The worker running example 4 writes part of it and dies; dask retries it elsewhere."""
    lc, client = cluster
    marker = tmp_path / "died"
    spec = f"4:{marker}"
    client.run(lambda: os.environ.__setitem__(FAULT_ENV, spec))  # a lambda reaches the real os.environ
    try:
        out = tmp_path / "death.zarr"
        res = run(patients, out, cluster, split=parse_split("train=0.5,val=0.25,test=0.25"))
    finally:
        client.run(lambda: os.environ.pop(FAULT_ENV, None))
    assert marker.exists()  # the fault really happened
    assert res.written == 12 and not res.failed
    assert files(out) == files(reference[0])
    client.wait_for_workers(2)


def test_bad_series_recorded_and_skipped(patients, cluster, tmp_path):
    """A patient whose pixel data fails to decode on the worker is recorded; the others are written."""
    import shutil

    import pydicom
    from pydicom.uid import RLELossless

    pytest.importorskip("rle")
    root = tmp_path / "in"
    shutil.copytree(patients, root)
    victim = sorted((root / "P2").iterdir())[0]
    ds = pydicom.dcmread(victim)
    ds.compress(RLELossless)
    frag = bytearray(ds.PixelData)
    frag[84:len(frag) - 8] = b"\x81" * (len(frag) - 92)  # decodes past the frame: the decoder panics
    ds.PixelData = bytes(frag)
    ds.save_as(victim)
    out = tmp_path / "bad.zarr"
    res = run(root, out, cluster)
    assert res.planned == 12 and res.written == 10 and len(res.failed) == 2
    from synth.io.deid import PathNames

    masked = PathNames([root / "P2"], SALT)(victim)  # as the scan of that top-level folder names it
    assert all(masked in why and victim.name not in why for _, why in res.failed)
    done = Store.open(out).complete()
    assert done.sum() == 10 and sorted(np.flatnonzero(~done)) == sorted(i for i, _ in res.failed)


def test_manifest_patient_and_split(patients, cluster, tmp_path):
    csv = tmp_path / "m.csv"
    rel = os.path.relpath(patients, tmp_path)
    csv.write_text(f"path,patient,split\n{rel}/P0,alice,test\n{rel}/P1,alice,test\n{rel}/P3,bob,\n")
    rows = read_manifest(csv)
    out = tmp_path / "man.zarr"
    res = run(None, out, cluster, manifest=rows, split=parse_split("train=0.5,val=0.5"))
    assert res.planned == 9
    exs = Store.open(out).attrs["examples"]
    patients_by_split = defaultdict(set)
    for ex in exs:
        patients_by_split[ex["split"]].add(ex["sources"][0]["patient"])
    assert len(patients_by_split["test"]) == 1  # P0 and P1 are one patient "alice"
    assert sum(ex["split"] == "test" for ex in exs) == 6


def test_killed_command_resumes_to_identical_store(patients, reference, cluster, tmp_path):
    """Kill the whole `smssynth generate` process group mid-run, start again: same bytes."""
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-c", "from cli.main import main; main()", "generate", str(patients), "--out", str(out),
           "--sms", "2", "--coils", "3", "--accel", "2", "--acs", "4", "--seed", "3",
           "--split", "train=0.5,val=0.25,test=0.25", "--workers", "1", "--quiet"]
    env = {**os.environ, "SMSSYNTH_SALT": SALT.decode(), FAULT_ENV: ""}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, cwd=Path(__file__).resolve().parents[3],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    marker_dir = out / "complete" / "c"
    while time.time() < deadline:
        if marker_dir.exists() and len(list(marker_dir.iterdir())) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = int(Store.open(out).complete().sum())
    assert n_done < 12, "the run finished before it could be killed; make the test input bigger"
    res = run(patients, out, cluster, split=parse_split("train=0.5,val=0.25,test=0.25"))
    assert res.already == n_done and res.written == 12 - n_done
    assert files(out) == files(reference[0])


def test_fsspec_url_store(patients, reference, cluster, tmp_path):
    """An fsspec URL (here the local filesystem through fsspec) works for client and workers alike."""
    out = tmp_path / "url.zarr"
    res = run(patients, f"local://{out}", cluster, split=parse_split("train=0.5,val=0.25,test=0.25"),
              storage_options={"auto_mkdir": True})
    assert res.written == 12
    assert files(out) == files(reference[0])
    assert len(Store.open(f"local://{out}", storage_options={"auto_mkdir": True})) == 12


def _fake_example(index: int, series: str, slices: tuple[int, ...], draw: int = 0):
    from types import SimpleNamespace

    sources = tuple(SimpleNamespace(series=SimpleNamespace(key=series), slice=SimpleNamespace(index=s)) for s in slices)
    return SimpleNamespace(index=index, sources=sources, draw=draw)


def test_affinity_runs_balanced_and_grouped_by_series():
    from itertools import combinations

    from synth.dataset.generate import affinity_runs

    # two series of 5 slices, every pair: 10 examples each, interleaved in the input order
    exs = [_fake_example(2 * k + n, s, pair) for k, pair in enumerate(combinations(range(5), 2))
           for n, s in enumerate(("se-b", "se-a"))]
    runs = affinity_runs(exs, 2)
    assert sorted(len(r) for r in runs) == [10, 10]
    assert [{s.series.key for e in r for s in e.sources} for r in runs] == [{"se-a"}, {"se-b"}]
    assert sorted(e.index for r in runs for e in r) == sorted(e.index for e in exs)  # each example once
    # within a run, examples sharing the first slice are next to each other (the worker's cache)
    firsts = [e.sources[0].slice.index for e in runs[0]]
    assert firsts == sorted(firsts)


@pytest.mark.parametrize("n_workers", [1, 3, 7, 25])
def test_affinity_runs_any_worker_count(n_workers):
    from synth.dataset.generate import affinity_runs

    exs = [_fake_example(i, f"se-{i % 3}", (i % 4, 4 + i % 5), draw=i // 12) for i in range(20)]
    runs = affinity_runs(exs, n_workers)
    assert len(runs) == n_workers
    sizes = [len(r) for r in runs]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 20
    assert sorted(e.index for r in runs for e in r) == list(range(20))
    with pytest.raises(ValueError, match="n_workers"):
        affinity_runs(exs, 0)


def test_affinity_queues_hand_out_each_example_once():
    from synth.dataset.generate import AffinityQueues

    exs = [_fake_example(i, f"se-{i // 4}", (i % 4, 4)) for i in range(8)]  # 2 series of 4
    q = AffinityQueues(exs, ["w1", "w2"])
    assert len(q) == 8
    first = [q.next_for("w1").index for _ in range(4)]
    assert first == [0, 1, 2, 3] and q.taken == 0  # its own queue, in order
    # w1's queue is empty: it takes the LAST of w2's queue, leaving w2 its next ones
    assert q.next_for("w1").index == 7 and q.taken == 1
    assert q.next_for("w2").index == 4
    assert q.next_for("a-new-worker").index == 6 and q.taken == 2  # a worker without a queue takes too
    assert q.next_for("w2").index == 5
    assert q.next_for("w1") is None and q.next_for("w2") is None and len(q) == 0
    with pytest.raises(ValueError, match="worker"):
        AffinityQueues(exs, [])


def test_each_series_is_simulated_on_one_worker(patients, cluster, tmp_path):
    """4 patients of 3 pairs on 2 workers: a series' examples run in one worker process (so it is
    read and clustered once), except for examples a worker that ran out took from the other."""
    ran: dict[int, int] = {}
    out = tmp_path / "affinity.zarr"
    res = run(patients, out, cluster, progress=lambda done, total, r: ran.__setitem__(r["index"], r["pid"]))
    assert res.written == 12 and len(ran) == 12
    series = [ex["sources"][0]["series"] for ex in Store.open(out).attrs["examples"]]
    pids_of = defaultdict(set)
    for i, pid in ran.items():
        pids_of[series[i]].add(pid)
    assert len(pids_of) == 4
    assert sum(len(p) for p in pids_of.values()) <= 4 + res.taken  # each taken example adds one read at most
    assert len(set(ran.values())) == 2  # both workers worked
    # and the bytes are those of dask's own placement
    plain = tmp_path / "plain.zarr"
    run(patients, plain, cluster, affinity=False)
    assert files(out) == files(plain)
