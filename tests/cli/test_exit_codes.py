"""Exit codes, the same for every command (README, Reliability): 0 ok, 1 a failure at run time,
2 a usage or configuration error -- among them an existing or refused --out and a missing input.

Each case runs ``smssynth ARGS`` as the console script does and checks the code, that the error
is one line on stderr, and that nothing was written where it was refused.
"""

from __future__ import annotations

import pytest

from cli.main import COMMANDS, cli
from tests.cli.conftest import smssynth

WEIGHTS = "sms-crnn-cine-cpu"  # shipped in zoo/weights: loading it needs no download

# command -> argv with an --out (or OUT_DIR) that exists and holds the user's files, no --overwrite
EXISTING_OUT = {
    "phantom": lambda p: ["phantom", p.foreign],
    "dicom2kspace": lambda p: ["dicom2kspace", p.dcm, "--out", p.foreign, "--coils", 2, "--phase", "none"],
    "kspace2sms": lambda p: ["kspace2sms", p.raw, "--out", p.foreign],
    "generate": lambda p: ["generate", p.dcm, "--out", p.foreign, "--workers", 1],
    "recon": lambda p: ["recon", "--model", "zero-filled", p.store, "--out", p.foreign],
    "export": lambda p: ["export", p.store, "--to", "ismrmrd", "--out", p.foreign],
    "zoo card": lambda p: ["zoo", "card", WEIGHTS, "--out", p.foreign],
    # a training --out is a run folder: one that holds a run needs --resume
    "train": lambda p: ["train", "--data", p.store, "--model", "sms-crnn", "--out", p.run],
    "finetune": lambda p: ["finetune", "--from", WEIGHTS, "--data", p.store, "--out", p.run],
}

# command -> argv naming an input that does not exist
MISSING_INPUT = {
    "dicom2kspace": lambda p: ["dicom2kspace", p.nope, "--out", p.new],
    "kspace2sms": lambda p: ["kspace2sms", p.nope, "--out", p.new],
    "generate": lambda p: ["generate", p.nope, "--out", p.new],
    "generate --manifest": lambda p: ["generate", "--manifest", p.nope, "--out", p.new],
    "generate --recipe": lambda p: ["generate", p.dcm, "--recipe", p.nope, "--out", p.new],
    "inspect": lambda p: ["inspect", p.nope],
    "inspect (not a store)": lambda p: ["inspect", p.dcm],
    "recon": lambda p: ["recon", "--model", "zero-filled", p.nope, "--out", p.new],
    "recon --model": lambda p: ["recon", "--model", p.nope / "ck", p.store, "--out", p.new],
    "evaluate": lambda p: ["evaluate", p.nope],
    "export": lambda p: ["export", p.nope, "--to", "fastmri-h5", "--out", p.new],
    "zoo info": lambda p: ["zoo", "info", p.nope / "ck.safetensors"],
    "zoo card": lambda p: ["zoo", "card", p.nope / "ck.safetensors", "--out", p.new],
    "train": lambda p: ["train", "--data", p.nope, "--model", "sms-crnn", "--out", p.new],
    "finetune": lambda p: ["finetune", "--from", p.nope / "ck", "--data", p.store, "--out", p.new],
}

# command -> argv that is valid but fails at run time (cheap cases)
RUNTIME_FAILURE = {
    "phantom": lambda p: ["phantom", p.file / "sub"],  # cannot create a folder below a file
    "dicom2kspace": lambda p: ["dicom2kspace", p.dcm, "--out", p.file / "s.zarr", "--coils", 2, "--phase", "none"],
    "kspace2sms": lambda p: ["kspace2sms", p.raw, "--out", p.file / "s.zarr"],
    "inspect --verify": lambda p: ["inspect", p.damaged, "--verify"],
    "recon": lambda p: ["recon", "--model", "zero-filled", p.damaged, "--out", p.new],
    "evaluate": lambda p: ["evaluate", p.damaged, "--baselines", "zero-filled"],
    "export": lambda p: ["export", p.damaged, "--to", "fastmri-h5", "--out", p.new],
}


class Paths:
    def __init__(self, tmp_path, phantom_cine, kspace_store, damaged_store, raw_kspace, foreign):
        self.dcm, self.store, self.damaged, self.raw, self.foreign = (phantom_cine, kspace_store, damaged_store,
                                                                       raw_kspace, foreign)
        self.nope = tmp_path / "nope"
        self.new = tmp_path / "new"
        self.file = tmp_path / "a-file"
        self.file.write_text("x")
        self.run = tmp_path / "run"
        (self.run / "checkpoints").mkdir(parents=True)
        (self.run / "checkpoints" / "last.json").write_text("{}")


@pytest.fixture
def paths(tmp_path, phantom_cine, request):
    lazy = request.getfixturevalue  # the stores only for the cases that use them
    names = request.node.callspec.params
    case = (names.get("existing") or names.get("missing") or names.get("failing") or "")
    needs_store = any(w in case for w in ("recon", "evaluate", "train", "finetune", "inspect", "export"))
    return Paths(tmp_path, phantom_cine, lazy("kspace_store") if needs_store else None,
                 lazy("damaged_store") if needs_store else None,
                 lazy("raw_kspace") if "kspace2sms" in case else None, lazy("foreign"))


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("Error: "), err
    assert sum(ln.startswith("Error") for ln in lines) == 1, err
    return lines[-1]


@pytest.mark.parametrize("existing", sorted(EXISTING_OUT))
def test_existing_out_without_overwrite_is_a_usage_error(existing, paths, capsys):
    code, out, err = smssynth(capsys, *EXISTING_OUT[existing](paths), "-q")
    assert code == 2, (out, err)
    line = one_line_error(err)
    assert "--out" in line or "--overwrite" in line or "--resume" in line, line
    assert sorted(p.name for p in paths.foreign.iterdir()) == ["notes.txt"]  # nothing written, nothing deleted


@pytest.mark.parametrize("missing", sorted(MISSING_INPUT))
def test_missing_input_is_a_usage_error(missing, paths, capsys):
    code, out, err = smssynth(capsys, *MISSING_INPUT[missing](paths), "-q")
    assert code == 2, (out, err)
    one_line_error(err)
    assert not paths.new.exists()


@pytest.mark.parametrize("failing", sorted(RUNTIME_FAILURE))
def test_failure_at_run_time_exits_1(failing, paths, capsys):
    code, out, err = smssynth(capsys, *RUNTIME_FAILURE[failing](paths), "-q")
    assert code == 1, (out, err)
    one_line_error(err)


def test_broken_weights_registry_exits_1(tmp_path, monkeypatch, capsys):
    (tmp_path / "registry.json").write_text("{")
    monkeypatch.setenv("SMSSYNTH_WEIGHTS_DIR", str(tmp_path))
    code, _, err = smssynth(capsys, "zoo", "list")
    assert code == 1 and "not valid JSON" in one_line_error(err)


def leaf_commands():
    """Every ``smssynth`` command that runs something (group subcommands by their full name)."""
    import click

    ctx = click.Context(cli)
    for name in sorted(COMMANDS):
        cmd = cli.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            for sub in sorted(cmd.list_commands(ctx)):
                yield f"{name} {sub}", cmd.get_command(ctx, sub)
        else:
            yield name, cmd


@pytest.mark.parametrize("name", [n for n, _ in leaf_commands()])
def test_unknown_option_is_a_usage_error(name, capsys):
    code, _, err = smssynth(capsys, *name.split(), "--no-such-option")
    assert code == 2 and "No such option" in err and "Traceback" not in err
