"""The `edgekit` command: parse, call edgekit.api, map errors to documented exit statuses."""

from __future__ import annotations

import json
import sys
import time
import traceback as tb
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit import api
from edgekit.cli_emulator import emulator
from edgekit.errors import EdgekitError, ExitStatus, first_line
from edgekit.executors import EMULATED_CPUS
from edgekit.pipeline import Reporter

if TYPE_CHECKING:
    from edgekit.manifest import Manifest
    from edgekit.verification import VerifyResult

EXIT_STATUSES = "\b\n" + "\n".join(f"  {s.value:>3}  {s.name.lower().replace('_', ' ')}" for s in ExitStatus)


class ConsoleReporter(Reporter):
    """Prints one line per stage (with its time) and warnings to stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        if not self.quiet:
            click.echo(f"  {name} ...", err=True)
        yield
        if not self.quiet:
            click.echo(f"  {name} done in {time.perf_counter() - started:.1f} s", err=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            click.echo(f"    {message}", err=True)

    def warn(self, message: str) -> None:
        click.secho(f"warning: {message}", fg="yellow", err=True)


def _parse_shape(_ctx: Any, _param: Any, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a shape like 1,3,224,224") from None


def _parse_json_table(_ctx: Any, _param: Any, value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        table = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON ({exc.msg})") from None
    if not isinstance(table, dict):
        raise click.BadParameter("expects a JSON object, e.g. '{\"classes\": 7}'")
    return table


def _run(traceback: bool, action: Callable[[], Any]) -> Any:
    """Run `action`; turn edgekit errors into one line on stderr and a documented exit status."""
    try:
        return action()
    except EdgekitError as exc:
        if traceback:  # the chain, then the same documented exit status
            click.echo(tb.format_exc(), err=True)
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.status)
    except KeyboardInterrupt:
        click.echo("interrupted; no artifact written", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except Exception as exc:  # a bug: one line unless asked for the chain
        if traceback:
            click.echo(tb.format_exc(), err=True)
        click.secho(f"internal error: {first_line(exc)}", fg="red", err=True)
        click.echo("this is a bug in edgekit; re-run with --traceback and report it", err=True)
        sys.exit(ExitStatus.INTERNAL)


@click.group(epilog=f"Exit statuses:\n\n{EXIT_STATUSES}", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit-deploy", prog_name="edgekit")
def main() -> None:
    """Prune, quantize, export and verify PyTorch models for phones, Macs and boards."""


@main.command(epilog=f"Exit statuses:\n\n{EXIT_STATUSES}")
@click.argument("model")
@click.option("--target", "-t", required=True, help="a bundled target (see `edgekit targets`) or a target .toml file")
@click.option("--recipe", "-r", help="bundled recipe name or a recipe .toml (default: the target's)")
@click.option(
    "--data",
    "-d",
    type=click.Path(path_type=Path),
    help=".npz with inputs[, labels] or a folder of <label>/<image> files",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    help="state dict for a MODULE:FACTORY model (loaded with weights_only=True)",
)
@click.option("--input-shape", callback=_parse_shape, help="model input shape, e.g. 1,3,224,224 (not needed for .pt2)")
@click.option(
    "--factory-args", callback=_parse_json_table, help="keyword arguments of MODULE:FACTORY, JSON: '{\"classes\": 7}'"
)
@click.option("--strip-prefix", help="strip this prefix from every weight name (module. for DataParallel checkpoints)")
@click.option(
    "--metric", "metrics", multiple=True, metavar="FILE.py:FUNCTION", help="a task metric (float, artifact, labels)"
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a recipe value, e.g. prune.ratio=0.3"
)
@click.option("--out", "out_dir", default="dist", show_default=True, type=click.Path(path_type=Path))
@click.option("--name", help="artifact name (default: the model file's name)")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="trust the model file: allow a pickled module, or a .pt2 that needs pickle (runs code stored in the file)",
)
@click.option(
    "--allow-accuracy-failure",
    is_flag=True,
    help="keep an artifact that misses its accuracy gate, marked failed (exit status stays 7)",
)
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable summary on stdout")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def build(model: str, as_json: bool, traceback: bool, **options: Any) -> None:
    """Build a verified artifact of MODEL for one target.

    MODEL is a .pt2 (torch.export.save), a TorchScript file, MODULE:FACTORY or file.py:factory, or a
    pickled module with --allow-pickle.
    """
    reporter = ConsoleReporter(quiet=as_json)
    if not as_json:
        click.echo(f"edgekit: building {model} for {options['target']}", err=True)
    try:
        # Converters print progress on stdout; keep stdout for the summary (and clean --json).
        with redirect_stdout(sys.stderr):
            result = _run(traceback, lambda: api.build(model, reporter=reporter, **options))
    except SystemExit as stop:
        if as_json:
            click.echo(json.dumps({"ok": False, "exit_status": stop.code}))
        raise
    for warning in result.manifest.warnings:
        reporter.warn(warning)
    summary = summarize(result.manifest, result.path)
    click.echo(json.dumps(summary, indent=2) if as_json else render_summary(summary))


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.option("--traceback", is_flag=True)
def inspect(artifact: Path, as_json: bool, traceback: bool) -> None:
    """Show what an artifact is, how it was made and how accurate it measured.

    Exits 5 when a file differs from the manifest and 7 when the artifact failed its accuracy gate.
    """
    manifest, file_problems = _run(traceback, lambda: api.inspect(artifact))
    summary = {**summarize(manifest, artifact), "file_problems": file_problems}
    click.echo(json.dumps(summary, indent=2) if as_json else render_summary(summary))
    if file_problems:
        click.secho("files differ from the manifest: " + "; ".join(file_problems), fg="red", err=True)
        sys.exit(ExitStatus.BAD_INPUT)
    if manifest.gate_failed:
        click.secho(f"this artifact FAILED its accuracy gate: {_gate_line(summary['gate'])}", fg="red", err=True)
        sys.exit(ExitStatus.ACCURACY_FAILED)
    if manifest.inconclusive:
        click.secho(f"this artifact's accuracy is inconclusive: {manifest.accuracy.reason}", fg="yellow", err=True)
        sys.exit(ExitStatus.INCONCLUSIVE)


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", "-d", type=click.Path(path_type=Path), help="re-measure the artifact on this data")
@click.option("--model", help="the source model, when it is no longer where the manifest says")
@click.option("--on", help="also run it on the target's CPU: aarch64 (emulated here) or ssh://user@host[:port]")
@click.option("--cpu", type=click.Choice(EMULATED_CPUS), help="the emulated CPU for --on aarch64 [default: cortex-a72]")
@click.option("--json", "as_json", is_flag=True)
@click.option("--traceback", is_flag=True)
def verify(
    artifact: Path,
    data: Path | None,
    model: str | None,
    on: str | None,
    cpu: str | None,
    as_json: bool,
    traceback: bool,
) -> None:
    """Check an artifact: files against the manifest, golden self-test in its runtime, recorded gate.

    With --data, measure it again against float outputs re-computed from the source model. Exits 0
    only when every check that ran held; 7 when the golden outputs differ or a gate failed.
    """
    with redirect_stdout(sys.stderr):
        found = _run(traceback, lambda: api.verify(artifact, data=data, model=model, on=on, cpu=cpu))
    if as_json:
        click.echo(json.dumps(_plain(found), indent=2, default=str))
    else:
        click.echo(render_verify(found))
    for warning in found.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if found.exit_status:
        sys.exit(found.exit_status)


@main.command()
def targets() -> None:
    """List the bundled targets."""
    for spec in _run(False, api.list_targets):
        click.echo(f"{spec.name:<8} {spec.backend:<12} default recipe {spec.default_recipe:<18} {spec.description}")


@main.command()
def recipes() -> None:
    """List the bundled recipes."""
    for name, description in _run(False, api.list_recipes).items():
        click.echo(f"{name:<22} {description}")


def summarize(manifest: Manifest, path: Path) -> dict[str, Any]:
    """Return the few figures a person or a pipeline looks at first."""
    accuracy = manifest.accuracy
    latency = manifest.latency
    gate = accuracy.gate
    return {
        "ok": not manifest.gate_failed,
        "artifact": str(path / manifest.artifact.file),
        "target": manifest.target.name,
        "scheme": manifest.quantize.get("scheme"),
        "accuracy_status": accuracy.status,
        "reason": accuracy.reason,
        "gate": None if gate is None else {"rule": gate.rule, "value": gate.value, "passed": gate.passed},
        "metrics": accuracy.metrics,
        "size_bytes": manifest.size.artifact_bytes,
        "size_over_float": manifest.size.artifact_over_float,
        "latency_ms": latency.get("artifact", {}).get("median_ms"),
        "float_latency_ms": latency.get("float", {}).get("median_ms"),
        "latency_over_float": latency.get("artifact_over_float"),
        "warnings": list(manifest.warnings),
    }


def render_summary(s: dict[str, Any]) -> str:
    m = s["metrics"]
    lines = [f"artifact   {s['artifact']}  ({s['target']}, {s['scheme']})", f"accuracy   {s['accuracy_status']}"]
    if s["accuracy_status"] == "skipped" and s.get("reason"):
        lines.append(f"  why      {s['reason']}")
    if "float_top1" in m:
        lines.append(
            f"  top-1    float {m['float_top1']:.2f}%  artifact {m['artifact_top1']:.2f}%  (drop "
            f"{m['top1_drop']:.2f} points)"
        )
    if m:
        lines.append(
            f"  fidelity SQNR {m['sqnr_db']:.1f} dB, cosine {m['cosine']:.4f}, top-1 agreement "
            f"{m['top1_agreement']:.1f}%"
        )
    if s["gate"]:
        lines.append(f"  gate     {_gate_line(s['gate'])}")
    ratio = f" ({s['size_over_float']:.2f}x float)" if s["size_over_float"] else ""
    lines.append(f"size       {s['size_bytes'] / 1e6:.3f} MB{ratio}")
    if s["latency_ms"] is not None:
        lines.append(
            f"latency    {s['latency_ms']:.3f} ms vs float {s['float_latency_ms']:.3f} ms on this host "
            f"({s['latency_over_float']:.2f}x)"
        )
    return "\n".join(lines)


def render_verify(found: VerifyResult) -> str:
    g = found.golden
    lines = [f"{found.artifact}: {found.status}"]
    if g.max_abs_error is not None:
        lines.append(
            f"  golden    {g.samples} samples, max abs error {g.max_abs_error:.3g} (tolerance {g.atol:.3g}), "
            f"{g.checked_with}"
        )
    else:
        lines.append(f"  golden    not run: {g.reason}")
    gate = found.build_gate
    lines.append(f"  at build  accuracy {found.build_accuracy}" + (f", gate {_gate_line(gate)}" if gate else ""))
    if found.remeasured:
        r = found.remeasured
        lines.append(f"  --data    {r['samples']} samples ({r['split']}); float outputs {r['float_outputs']}")
        lines.append(f"            gate {_gate_line(r['gate'])}")
    if found.on_target is not None:
        from edgekit.verify_remote import render_target

        lines += render_target(found.on_target)
    lines += [f"  problem   {p}" for p in found.problems]
    return "\n".join(lines)


def _gate_line(gate: dict[str, Any]) -> str:
    verdict = "n/a (no real data)" if gate["passed"] is None else "passed" if gate["passed"] else "FAILED"
    value = gate.get("value")
    return f"{gate['rule']}: {verdict}" + (f" (measured {value:.3f})" if isinstance(value, float) else "")


def _plain(value: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


main.add_command(emulator)

if __name__ == "__main__":
    main()
