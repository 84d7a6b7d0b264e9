"""One ``smssynth`` command at two git revisions: same output bytes?  How much slower or faster?

For changes that must not change behaviour (moving modules, splitting them): each revision is
checked out into a temporary worktree, the command runs from each in turn (alternating which
goes first, ``--repeats`` times, every run into a fresh output folder), and the script prints
whether the outputs are byte-identical and the median ratios of wall-clock and CPU time
(children's user + system) of B over A.  ``{out}`` in the command is replaced by the run's output
path.  Runs use this Python environment with ``PYTHONPATH`` set to the revision's worktree.

    python benchmarks/bench_revisions.py 16b1c90 HEAD --repeats 5 --workdir /dev/shm -- \\
        dicom2kspace ../shared/data/sunnybrook-cine/SCD0000101 --out {out} --recipe datasets/cine-sms2-r4.yaml
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def tree_bytes(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {"": root.read_bytes()}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_once(worktree: Path, command: list[str], out: Path) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(worktree))
    args = [sys.executable, "-m", "cli.main", *[a.replace("{out}", str(out)) for a in command]]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{worktree.name}: `smssynth {' '.join(command)}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="where outputs go (e.g. /dev/shm)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, command = ap.parse_args(argv[:cut]), argv[cut + 1:]
    if not command or not any("{out}" in a for a in command):
        ap.error("give the smssynth command after --, with {out} where its output goes")
    tmp = Path(tempfile.mkdtemp(prefix="bench-rev-", dir=args.workdir))
    trees = {}
    try:
        for name, rev in (("A", args.rev_a), ("B", args.rev_b)):
            trees[name] = tmp / f"tree-{name}"
            subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(trees[name]), rev],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = {"A": [], "B": []}
        outputs = {}
        for r in range(args.repeats):
            for name in (("A", "B") if r % 2 == 0 else ("B", "A")):
                out = tmp / f"out-{name}-{r}"
                if hasattr(os, "sync"):
                    os.sync()
                times[name].append(run_once(trees[name], command, out))
                outputs.setdefault(name, tree_bytes(out))
                shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        same = outputs["A"] == outputs["B"]
        print(f"A = {args.rev_a}, B = {args.rev_b}; `smssynth {' '.join(command)}`; {args.repeats} runs each")
        for name in ("A", "B"):
            w = statistics.median(t[0] for t in times[name])
            c = statistics.median(t[1] for t in times[name])
            print(f"  {name}: median wall {w:.2f} s, CPU {c:.2f} s")
        ratio = lambda k: statistics.median(t[k] for t in times["B"]) / statistics.median(t[k] for t in times["A"])  # noqa: E731
        print(f"B / A: wall {ratio(0):.3f}, CPU {ratio(1):.3f}")
        print(f"outputs byte-identical: {'yes' if same else 'NO'} ({len(outputs['A'])} files)")
        if not same:  # e.g. metadata with timings or the software's paths; the arrays may still agree
            names = sorted(set(outputs["A"]) | set(outputs["B"]))
            differ = [n for n in names if outputs["A"].get(n) != outputs["B"].get(n)]
            print(f"  differing files ({len(differ)}): {', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''}")
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
