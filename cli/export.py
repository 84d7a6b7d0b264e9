"""``smssynth export``: a k-space store's examples as fastMRI-style HDF5 or ISMRMRD files."""

from __future__ import annotations

import click

from cli.options import progress_bar, user_error, verbosity_options


@click.command("export")
@click.argument("store")
@click.option("--to", "layout", required=True, type=click.Choice(["fastmri-h5", "ismrmrd"]),
              help="File layout: fastMRI-style HDF5 ('kspace', 'mask', 'reconstruction_rss', 'ismrmrd_header') or "
                   "ISMRMRD (acquisitions per line, header from the store's facts, reference images).")
@click.option("--out", "-o", required=True, type=click.Path(), help="Output folder (one .h5 file per example).")
@click.option("--kspace", "kspace", type=click.Choice(["collapsed", "single-band"]), default="collapsed",
              show_default=True,
              help="'collapsed': the SMS k-space lines the mask samples, each with its CAIPI kz (what the scanner "
                   "records). 'single-band': each SMS slice's fully sampled coil k-space before the collapse, with "
                   "the mask and kz (synthetic stores; what kspace2sms reads back).")
@click.option("--split", default=None, help="Export only the examples of this split (the store's 'split' array).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out folder (only an earlier export).")
@verbosity_options
def export(store, layout, out, kspace, split, overwrite, quiet):
    """Write every complete example of the k-space STORE as one file in --out.

    The layouts, and how the SMS (CAIPI-collapsed) data map onto them, are in synth/dataset/export.py
    and docs/store-format.md ("Exporting").  Example:

        smssynth export sms.zarr --to ismrmrd --out sms-mrd/
    """
    from synth.dataset.export import export as run
    from synth.errors import SmssynthError

    bar, progress = progress_bar("export", quiet)
    try:
        s = run(store, out, layout, kspace=kspace, overwrite=overwrite, split=split, progress=progress)
    except SmssynthError as e:
        bar.close()
        raise user_error(e) from None
    bar.close()
    click.echo(f"\n{s.written} example(s) written to {out} as {layout} ({kspace} k-space), "
               f"{s.wall_seconds:.1f}s")
    if s.incomplete:
        shown = ", ".join(map(str, s.incomplete[:10])) + (" ..." if len(s.incomplete) > 10 else "")
        click.echo(f"left out {len(s.incomplete)} incomplete example(s) ({shown}): re-run the command that made "
                   f"the store to complete them")
    for note in s.notes:
        click.echo(note)
