"""synth.io.deid: salted pseudonyms and where the salt comes from."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synth.errors import ConfigError
from synth.io.deid import _create_salt_file, pseudonym, resolve_salt, salt_path

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def test_pseudonym_is_a_truncated_hmac():
    ref = hmac.new(b"salt", b"1.2.3.4", hashlib.sha256).hexdigest()[:16]
    assert pseudonym("1.2.3.4", b"salt") == ref
    assert pseudonym("1.2.3.4", b"salt", prefix="se-") == "se-" + ref


@given(value=st.text(max_size=80), salt=st.binary(min_size=1, max_size=64), prefix=st.sampled_from(["", "se-", "pt-"]))
def test_pseudonym_format_and_determinism(value, salt, prefix):
    key = pseudonym(value, salt, prefix)
    assert re.fullmatch(re.escape(prefix) + "[0-9a-f]{16}", key)
    assert key == pseudonym(value, salt, prefix)


def test_pseudonym_depends_on_value_and_salt():
    keys = {pseudonym(v, s) for v in ("a", "b") for s in (b"x", b"y")}
    assert len(keys) == 4


@pytest.mark.parametrize("salt", [b"", "text", None])
def test_pseudonym_refuses_a_missing_salt(salt):
    with pytest.raises(ConfigError, match="salt"):
        pseudonym("v", salt)


@pytest.fixture
def no_env_salt(monkeypatch, tmp_path):
    monkeypatch.delenv("SMSSYNTH_SALT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "smssynth" / "salt"


def test_salt_precedence(monkeypatch, no_env_salt):
    monkeypatch.setenv("SMSSYNTH_SALT", "from-env")
    assert resolve_salt("from-flag") == b"from-flag"
    assert resolve_salt() == b"from-env"
    with pytest.raises(ConfigError, match="--salt .* is empty"):
        resolve_salt("")  # an empty --salt never silently means the default
    assert not no_env_salt.exists()  # the file is only made when needed
    monkeypatch.delenv("SMSSYNTH_SALT")
    salt = resolve_salt()
    assert no_env_salt.read_bytes() == salt


@posix_only
def test_salt_file_is_created_once_private_and_random(no_env_salt):
    first = resolve_salt()
    assert len(first) == 32 and no_env_salt.read_bytes() == first
    assert stat.S_IMODE(no_env_salt.stat().st_mode) == 0o600
    assert stat.S_IMODE(no_env_salt.parent.stat().st_mode) == 0o700
    assert resolve_salt() == first  # kept, not regenerated
    assert [p.name for p in no_env_salt.parent.iterdir()] == ["salt"]  # no temp file left behind
    no_env_salt.unlink()
    assert resolve_salt() != first


def test_default_salt_path_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert salt_path() == tmp_path / ".config" / "smssynth" / "salt"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert salt_path() == tmp_path / ".config" / "smssynth" / "salt"


def test_existing_salt_file_wins_a_creation_race(no_env_salt):
    no_env_salt.parent.mkdir(parents=True)
    no_env_salt.write_bytes(b"the winner")
    _create_salt_file(no_env_salt)  # a slower concurrent creator
    assert no_env_salt.read_bytes() == b"the winner"
    assert resolve_salt() == b"the winner"


def test_empty_salt_file_is_an_error_naming_it(no_env_salt):
    no_env_salt.parent.mkdir(parents=True)
    no_env_salt.write_bytes(b"")
    with pytest.raises(ConfigError, match=re.escape(str(no_env_salt))):
        resolve_salt()


@posix_only
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file modes")
def test_unwritable_config_dir_is_an_error(no_env_salt):
    no_env_salt.parent.parent.mkdir(parents=True)
    no_env_salt.parent.parent.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="SMSSYNTH_SALT"):
            resolve_salt()
    finally:
        no_env_salt.parent.parent.chmod(0o700)


# ----------------------------------------------------------------------------- path names


def test_path_names_mask_every_component_relative_to_the_input(tmp_path):
    from synth.io.deid import PathNames

    root = tmp_path / "export"
    f = root / "DOE_JOHN_12345" / "IM_DOE_JOHN.dcm"
    names = PathNames([root], b"salt")
    name = names(f)
    parts = name.split("/")
    assert len(parts) == 3 and all(re.fullmatch(r"#[0-9a-f]{10}(\.dcm)?", p) for p in parts)
    assert parts[-1].endswith(".dcm") and "DOE" not in name and "export" not in name
    assert name == names(str(f)) == PathNames([str(root) + os.sep], b"salt")(f)  # str/Path, trailing slash
    assert PathNames([root], b"other")(f) != name
    assert PathNames([root], b"salt", show=True)(f) == str(f)
    # the same folder name gets the same hash wherever it is; a file's stem is hashed like a folder
    assert names(root / "DOE_JOHN_12345" / "x.txt").split("/")[:2] == parts[:2]


@pytest.mark.parametrize("file,kept", [("IM_0001.DCM", ".DCM"), ("notes.txt", ".txt"), ("DOE.JOHN", ""),
                                       ("IM_DOE", ""), ("archive.tar.gz", ".gz")])
def test_path_names_keep_only_plain_extensions(tmp_path, file, kept):
    from synth.io.deid import PathNames

    name = PathNames([tmp_path], b"salt")(tmp_path / file).rsplit("/", 1)[-1]
    assert re.fullmatch(r"#[0-9a-f]{10}" + re.escape(kept), name)
    assert "JOHN" not in name and "DOE" not in name


def test_path_names_of_a_file_input_and_of_an_outside_path(tmp_path):
    from synth.io.deid import PathNames

    f = tmp_path / "DOE_JOHN.dcm"
    names = PathNames([f], b"salt")
    assert re.fullmatch(r"#[0-9a-f]{10}\.dcm", names(f))
    assert re.fullmatch(r"#[0-9a-f]{10}", names(tmp_path))  # a folder above the inputs: its own name only
    assert names.note and "--show-paths" in names.note and PathNames([f], b"salt", show=True).note == ""
