"""``-q/--quiet`` and ``-v/--verbose`` on every command, the same way (issue 14): ``-q`` leaves
warnings, errors and the final summary, ``-v`` adds debug logs and per-stage timings, both
together are a usage error; progress bars only on a terminal and never with ``-q``."""

from __future__ import annotations

import io
import logging

import pytest

from cli import options
from tests.cli.conftest import smssynth
from tests.cli.test_exit_codes import leaf_commands

NOT_YET: set[str] = set()


@pytest.mark.parametrize("name,cmd", [pytest.param(n, c, id=n) for n, c in leaf_commands() if n not in NOT_YET])
def test_every_command_takes_q_and_v(name, cmd):
    flags = {o for p in cmd.params for o in p.opts}
    assert {"-q", "--quiet", "-v", "--verbose"} <= flags, name


# command -> the least argv that passes click's own checks (so the -q/-v check is what answers)
MINIMAL = {
    "phantom": lambda p: ["phantom", p / "out"],
    "dicom2kspace": lambda p: ["dicom2kspace", p, "--out", p / "s.zarr"],
    "kspace2sms": lambda p: ["kspace2sms", p, "--out", p / "s.zarr"],
    "generate": lambda p: ["generate", p, "--out", p / "s.zarr"],
    "inspect": lambda p: ["inspect", p],
    "recon": lambda p: ["recon", "--model", "zero-filled", p, "--out", p / "r.zarr"],
    "evaluate": lambda p: ["evaluate", p],
    "export": lambda p: ["export", p, "--to", "ismrmrd", "--out", p / "e"],
    "zoo list": lambda p: ["zoo", "list"],
    "zoo info": lambda p: ["zoo", "info", "x"],
    "zoo card": lambda p: ["zoo", "card", "x"],
    "train": lambda p: ["train", "--out", p / "run"],
    "finetune": lambda p: ["finetune", "--out", p / "run"],
    "experiment table1": lambda p: ["experiment", "table1", "--out", p / "t1"],
}


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_quiet_and_verbose_together_are_a_usage_error(name, tmp_path, capsys):
    code, out, err = smssynth(capsys, *MINIMAL[name](tmp_path), "-q", "-v")
    assert code == 2 and "-q/--quiet and -v/--verbose contradict each other" in err, (out, err)
    assert "Traceback" not in err and sorted(tmp_path.iterdir()) == []  # refused before any work


def test_phantom_quiet_is_the_summary_and_verbose_adds_timings(tmp_path, capsys):
    args = ["--patients", 2, "--slices", 1, "--frames", 2, "--acquired", "16x16", "--matrix", "16x16"]
    code, out, err = smssynth(capsys, "phantom", tmp_path / "a", *args)
    assert code == 0 and [ln.split(":")[0] for ln in out.splitlines()] == ["PHANTOM01", "PHANTOM02"]
    assert "timing" not in err
    code, out, err = smssynth(capsys, "phantom", tmp_path / "b", *args, "-q")
    assert code == 0 and out.splitlines() == [f"2 cine phantom patients, 4 files in {tmp_path / 'b'}"]
    assert err == ""
    code, out, err = smssynth(capsys, "phantom", tmp_path / "c", *args, "--verbose")
    assert code == 0 and "PHANTOM02" in out
    assert "DEBUG smssynth.cli: timing: write PHANTOM01" in err and "smssynth phantom took" in err


def test_dicom2kspace_stage_timings_with_verbose_only(phantom_cine, tmp_path, capsys):
    args = ["--sms", 2, "--coils", 2, "--combos", 1, "--phase", "none"]
    code, out, err = smssynth(capsys, "dicom2kspace", phantom_cine, "--out", tmp_path / "a.zarr", *args, "-v")
    assert code == 0, err
    assert "stages, summed over threads" in out and "DEBUG smssynth.cli: timing" in err
    code, out, err = smssynth(capsys, "dicom2kspace", phantom_cine, "--out", tmp_path / "b.zarr", *args)
    assert code == 0 and "1 of 1 examples written" in out and "stages" not in out and "DEBUG" not in err
    code, out, err = smssynth(capsys, "dicom2kspace", phantom_cine, "--out", tmp_path / "c.zarr", *args, "-q")
    assert code == 0 and "1 of 1 examples written" in out and err == ""  # the summary; no bar, no log


@pytest.mark.parametrize("flags,level", [((), logging.INFO), (("-q",), logging.WARNING), (("-v",), logging.DEBUG)])
def test_log_levels(flags, level, capsys):
    code, _, _ = smssynth(capsys, "zoo", "list", *flags)
    assert code == 0
    for name in options.PROJECT_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == level
    assert logging.getLogger("distributed").getEffectiveLevel() == logging.WARNING
    logging.getLogger("smssynth.test").warning("a warning shows at every level")
    logging.getLogger("smssynth.test").debug("a debug line only with -v")
    err = capsys.readouterr().err
    assert "WARNING smssynth.test: a warning shows at every level" in err
    assert ("a debug line only with -v" in err) == (level == logging.DEBUG)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal,quiet,shown", [(True, False, True), (True, True, False), (False, False, False)])
def test_progress_bar_only_on_a_terminal_and_not_quiet(terminal, quiet, shown, monkeypatch):
    stream = FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar, progress = options.progress_bar("work", quiet)
    progress(1, 2)
    assert bar.disable is not shown
    bar.close()
    assert ("work" in stream.getvalue()) is shown
