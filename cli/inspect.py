"""``smssynth inspect``: print a store's schema and parameters; draw one example."""

from __future__ import annotations

import json

import click

from cli.options import UserError, stage, verbosity_options


@click.command("inspect")
@click.argument("store", type=click.Path(exists=True))
@click.option("--png", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Draw targets, the aliased SMS image, coil maps and phases of one example to this PNG.")
@click.option("--example", "-e", type=click.IntRange(min=0), default=0, show_default=True, help="Example to draw.")
@click.option("--frame", "-t", type=click.IntRange(min=0), default=0, show_default=True, help="Time frame to draw.")
@click.option("--json", "as_json", is_flag=True, help="Print the root attributes as JSON instead of a summary.")
@click.option("--verify", is_flag=True,
              help="Read every complete example and check each chunk (size, decoding, finite values); exit 1 "
                   "listing the damaged ones.  Reads the whole store.")
@verbosity_options
def inspect_cmd(store, png, example, frame, as_json, verify):
    """Describe the smssynth store STORE (schema, parameters, completeness)."""
    from synth.dataset.store import Store
    from synth.errors import SmssynthError

    try:
        st = Store.open(store)
    except SmssynthError as e:  # not a store, or not one this version reads: a usage error
        raise UserError(str(e), 2) from None
    if as_json:
        click.echo(json.dumps(st.attrs, indent=2))
    else:
        describe(st)
    if verify:
        n = int(st.complete().sum())
        with stage("verify"):
            bad = st.verify(deep=True)
        for i, problems in sorted(bad.items()):
            click.echo(f"example {i} damaged: {'; '.join(problems)}")
        if bad:
            raise click.ClickException(
                f"{len(bad)} of {n} complete examples are damaged; re-run the command that generated the store "
                f"(same options) to recompute them"
            )
        click.echo(f"verified: all {n} complete examples are readable")
    if png:
        n = len(st)
        if example >= n:
            raise click.BadParameter(f"store has {n} examples (0..{n - 1})", param_hint="--example")
        t = st.dims["T"]
        if frame >= t:
            raise click.BadParameter(f"store has {t} frames (0..{t - 1})", param_hint="--frame")
        try:
            ex = st.example(example)
        except SmssynthError as e:
            raise click.ClickException(str(e)) from None
        with stage("draw"):
            draw(ex, st, example, frame, png)
        click.echo(f"wrote {png}")


def describe(st) -> None:
    a = st.attrs
    d = st.dims
    done = st.complete()
    click.echo(f"{st.path}: {a['format']} v{a['format_version']} (generator {a['generator']['name']} "
               f"{a['generator']['version']}, command {a['generator'].get('command', '?')})")
    if st.kind == "targets":
        click.echo(f"kind: targets (images only: {d.get('S')} distinct slices; phase, coils, masks and noise are "
                   f"simulated on the fly by `smssynth train --synthesis on-the-fly`)")
    elif st.source == "measured":
        csm = a.get("measured", {}).get("csm", {}).get("method", "?")
        click.echo(f"kind: kspace, measured (kspace2sms from {a.get('measured', {}).get('formats')}: the real coils' "
                   f"data, target = RSS, csm by {csm}, no phase array)")
    else:
        click.echo("kind: kspace")
    click.echo(f"examples: {len(st)} ({int(done.sum())} complete, {int((~done).sum())} incomplete)")
    click.echo("dims: " + ", ".join(f"{k}={v}" for k, v in d.items()))
    click.echo("arrays:")
    names = sorted(st.root.array_keys())
    width = max((len(n) for n in names), default=12)
    for name in names:
        arr = st.root[name]
        dims = ",".join(arr.metadata.dimension_names or ())
        click.echo(f"  {name:<{width}} {str(arr.dtype):<10} {str(tuple(arr.shape)):<28} chunks {arr.chunks}  ({dims})")
    click.echo("params: " + ", ".join(f"{k}={v}" for k, v in a.get("params", {}).items()))
    m = d.get("M")
    caipi = a.get("params", {}).get("caipi", "row")
    how = {"row": f"kz = ky row mod {m}", "acquired": f"kz = acquisition rank of the row in its frame mod {m}"}
    if a.get("kind") == "targets":  # no k-space: the ordering is applied when items are simulated
        click.echo(f"caipi ordering: {caipi} ({how.get(caipi, 'see params')}; applied by the on-the-fly synthesis)")
    elif "kz" in st.root:
        click.echo(f"caipi ordering: {st.caipi} ({how.get(st.caipi, 'see params')}; per-row kz in the 'kz' array)")
    else:
        click.echo(f"caipi ordering: row (kz = ky row mod {m}; format {a['format_version']} stores have no 'kz' array)")
    click.echo("conventions:")
    for k, v in a.get("conventions", {}).items():
        click.echo(f"  {k}: {v}")


def draw(ex, st, index, frame, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from synth.physics.fft import ifft2c

    target, csm, kspace = ex["target"], ex["csm"], ex["kspace"]
    phase = ex.get("phase")
    m = target.shape[0]
    c = csm.shape[0]
    coils = list(range(min(c, 4)))
    rows = 4 if phase is not None else 3
    cols = max(m + 1, len(coils))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(m):
        axes[0, i].imshow(target[i, frame], cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"target slice {i}", fontsize=8)
    aliased = np.sqrt((np.abs(ifft2c(kspace[:, frame])) ** 2).sum(0))
    axes[0, m].imshow(aliased, cmap="gray")
    axes[0, m].set_title(f"aliased SMS (rss), t={frame}", fontsize=8)
    for j, ci in enumerate(coils):
        axes[1, j].imshow(np.abs(csm[ci, 0]), cmap="viridis")
        axes[1, j].set_title(f"|csm| coil {ci}, slice 0", fontsize=8)
        axes[2, j].imshow(np.angle(csm[ci, 0]), cmap="twilight", vmin=-np.pi, vmax=np.pi)
        axes[2, j].set_title(f"angle csm coil {ci}", fontsize=8)
        if phase is not None:
            wrapped = np.angle(np.exp(1j * phase[ci, 0, frame]))
            axes[3, j].imshow(wrapped, cmap="twilight", vmin=-np.pi, vmax=np.pi)
            axes[3, j].set_title(f"phase coil {ci}, slice 0", fontsize=8)
    fig.suptitle(f"{st.path} - example {index}, frame {frame}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
