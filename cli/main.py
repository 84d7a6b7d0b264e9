"""``smssynth`` click group; subcommands are loaded lazily from ``cli.<module>``."""

from __future__ import annotations

import importlib
import sys

import click

# command name -> (module, function); modules are imported only when the command runs
COMMANDS = {
    "phantom": ("cli.phantom", "phantom"),
    "dicom2kspace": ("cli.dicom2kspace", "dicom2kspace"),
    "kspace2sms": ("cli.kspace2sms", "kspace2sms"),
    "inspect": ("cli.inspect", "inspect_cmd"),
    "export": ("cli.export", "export"),
    "generate": ("cli.generate", "generate"),
    "zoo": ("cli.zoo", "zoo_cmd"),
    "train": ("cli.train", "train"),
    "finetune": ("cli.finetune", "finetune"),
    "recon": ("cli.recon", "recon"),
    "evaluate": ("cli.evaluate", "evaluate"),
    "experiment": ("cli.experiment", "experiment_cmd"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smssynth")
def cli():
    """smssynth: realistic multi-coil complex SMS k-space from magnitude DICOM."""


def main(argv=None):
    """Console-script entry point: user errors print one clear line, never a traceback."""
    from synth.errors import SmssynthError

    try:
        return cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SmssynthError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # disk full, permissions, vanished files: one line, no traceback
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        click.echo(f"Error: {e.strerror or e}{where}; check the path, permissions and free space", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
