"""A wrong value in a recipe names the file, the key, the type expected and the value found, on
one line, exit code 2, no traceback (issue 14); an unknown key is named with the allowed ones."""

from __future__ import annotations

import dataclasses

import pytest

from synth.dataset.config import MASKS, SimConfig
from synth.dataset.recipes import CHECKS, load_recipe
from synth.errors import ConfigError
from tests.cli.conftest import smssynth

# key: (YAML value of the wrong type, the message after "--recipe FILE: ")
WRONG = {
    "sms": ("two", "sms: expected an integer, got 'two'"),
    "coils": ("true", "coils: expected an integer, got True"),
    "accel": ("two", "accel: expected an integer, got 'two'"),
    "acs": ("2.5", "acs: expected an integer, got 2.5"),
    "mask": ("zigzag", f"mask: expected one of {', '.join(MASKS)}, got 'zigzag'"),
    "caipi": ("[row]", "caipi: expected one of row, acquired, got ['row']"),
    "csm": ("7", "csm: expected one of circle, blobs, mixed, got 7"),
    "phase": ("flat", "phase: expected one of kmeans, grating, none, got 'flat'"),
    "clusters": ("many", "clusters: expected an integer, got 'many'"),
    "resolution": ("high", "resolution: expected one of acquired, dicom, got 'high'"),
    "matrix": ("192x160", "matrix: expected [ny, nx] (two integers, e.g. [192, 160]) or null, got '192x160'"),
    "frames": ("[20]", "frames: expected an integer or null, got [20]"),
    "frames_mode": ("stretch", "frames_mode: expected one of crop, resample, got 'stretch'"),
    "snr": ("loud", "snr: expected a number or null, got 'loud'"),
    "seed": ("0.5", "seed: expected an integer, got 0.5"),
    "combos": ("all", "combos: expected an integer or null, got 'all'"),
    "draws": ("{n: 1}", "draws: expected an integer, got {'n': 1}"),
    "combine": ("anything", "combine: expected one of within-series, within-study, across-series, got 'anything'"),
    "min_distance_mm": ("far", "min_distance_mm: expected a number, got 'far'"),
    "store_phase": ("maybe", "store_phase: expected true or false, got 'maybe'"),
    "targets_only": ("1", "targets_only: expected true or false, got 1"),
    "split": ("3", "split: expected NAME=FRACTION,... (e.g. train=0.8,val=0.1,test=0.1) or a mapping of name: "
                   "fraction, got 3"),
    "name": ("[a, b]", "name: expected a string, got ['a', 'b']"),
    "description": ("12", "description: expected a string, got 12"),
}


def test_every_recipe_key_is_checked():
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    assert set(CHECKS) == fields | {"split", "name", "description"} == set(WRONG)


@pytest.mark.parametrize("key", sorted(WRONG))
def test_wrong_type_names_file_key_and_type(key, tmp_path):
    value, message = WRONG[key]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"sms: 2\n{key}: {value}\n" if key != "sms" else f"{key}: {value}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(recipe)
    assert str(e.value) == f"--recipe {recipe}: {message}"


@pytest.mark.parametrize("text,message", [
    ("accel: 0\n", "accel: must be >= 1, got 0"),  # the right type, out of range: SimConfig's check, by key
    ("frames_mode: resample\nmin_distance_mm: -1\n", "min_distance_mm: must be >= 0, got -1.0"),
    ("split: train=0.7,test=0.2\n", "split: fractions sum to 0.9"),
    ("acel: 2\n", "unknown key 'acel' (did you mean 'accel'?); allowed: accel, acs, caipi,"),
    ("accel: two\ncoils: x\n", "accel: expected an integer, got 'two'; coils: expected an integer, got 'x'"),
    ("", "expected a mapping of key: value, got an empty file"),
    ("- sms: 2\n", "expected a mapping of key: value, got list"),
])
def test_values_and_keys(text, message, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_recipe(recipe)
    assert str(e.value).startswith(f"--recipe {recipe}: {message}"), str(e.value)


def test_values_are_converted(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nmatrix: [32, 30]\nsnr: 1e3\nmin_distance_mm: 2\nframes: null\n")
    assert load_recipe(recipe) == {"matrix": (32, 30), "snr": 1000.0, "min_distance_mm": 2.0, "frames": None}


@pytest.mark.parametrize("text,message", [
    ("accel: two\n", "accel: expected an integer, got 'two'"),
    ("matrix: [192]\n", "matrix: expected [ny, nx]"),
    ("coil: 4\n", "unknown key 'coil' (did you mean 'coils'?)"),
])
def test_generate_reports_one_line_exit_2(text, message, phantom_cine, tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    code, out, err = smssynth(capsys, "generate", phantom_cine, "--recipe", recipe, "--out", tmp_path / "s.zarr")
    assert code == 2 and out == ""
    assert err.splitlines() == [err.splitlines()[0]] and err.startswith(f"Error: --recipe {recipe}: {message}"), err
    assert not (tmp_path / "s.zarr").exists()
