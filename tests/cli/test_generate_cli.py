"""``smssynth generate`` through click: recipes, precedence, usage errors."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from synth.dataset.recipes import load_recipe
from synth.dataset.store import Store

REPO = Path(__file__).resolve().parents[2]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("recipe", sorted((REPO / "datasets").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe):
    params = load_recipe(recipe)
    assert params["sms"] == 2 and params["accel"] == 2  # the paper's SMS 2 x R 2 = 4
    assert (recipe.with_suffix(".md")).exists(), "every recipe has a dataset card"


def test_recipe_with_flag_override(phantom_cine, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: t\nsms: 2\ncoils: 2\nmatrix: [32, 30]\nframes: 4\ncombos: 2\nsplit: a=0.5,b=0.5\n")
    out = tmp_path / "s.zarr"
    r = invoke("generate", phantom_cine, "--recipe", recipe, "--coils", 3, "--out", out, "--workers", 1, "-q")
    assert r.exit_code == 0, r.output
    st = Store.open(out)
    assert st.params["coils"] == 3  # the flag wins
    assert st.params["matrix"] == [32, 30] and st.params["frames"] == 4  # the recipe over defaults
    assert st.dims["C"] == 3 and len(st) == 2
    assert st.attrs["split"]["spec"] == "a=0.5,b=0.5"
    assert "written now" in r.output and "examples/s" in r.output


def test_bad_recipe_names_file_and_key(phantom_cine, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("sms: 2\ncoil: 4\n")
    r = invoke("generate", phantom_cine, "--recipe", recipe, "--out", tmp_path / "s.zarr")
    assert r.exit_code == 2 and "bad.yaml" in r.output and "coil" in r.output and "Traceback" not in r.output


def test_input_xor_manifest(phantom_cine, tmp_path):
    r = invoke("generate", "--out", tmp_path / "s.zarr")
    assert r.exit_code == 2 and "INPUT_ROOT or --manifest" in r.output


def test_bad_split(phantom_cine, tmp_path):
    r = invoke("generate", phantom_cine, "--out", tmp_path / "s.zarr", "--split", "train=0.7,test=0.2")
    assert r.exit_code == 2 and "sum to 0.9" in r.output
