"""synth must run with torch absent: block the import and run dicom2kspace end to end."""

import subprocess
import sys
import textwrap


def test_synth_and_dicom2kspace_without_torch(phantom_cine, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import pkgutil, importlib, synth
        for m in pkgutil.walk_packages(synth.__path__, "synth."):
            importlib.import_module(m.name)
        from cli.main import main
        main(["dicom2kspace", {str(phantom_cine)!r}, "--out", {str(tmp_path / "s.zarr")!r},
              "--sms", "2", "--coils", "2", "--combos", "1", "--quiet"])
        assert "torch" not in sys.modules
        print("OK-NO-TORCH")
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "SMSSYNTH_SALT": "x"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK-NO-TORCH" in r.stdout
