"""The `edgekit` command: parse, call edgekit.api, map errors to documented exit statuses."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from edgekit import api
from edgekit.cli_emulator import emulator
from edgekit.commands.bench import bench
from edgekit.commands.bundle import bundle
from edgekit.commands.doctor import doctor
from edgekit.commands.explain import explain
from edgekit.commands.output import Console, JsonCommand, call, envelope
from edgekit.commands.run import run
from edgekit.errors import EdgekitError, ExitStatus
from edgekit.executors import EMULATED_CPUS
from edgekit.pipeline import Reporter

if TYPE_CHECKING:
    from edgekit.manifest import Manifest
    from edgekit.verification import VerifyResult

EXIT_STATUSES = "\b\n" + "\n".join(f"  {s.value:>3}  {s.name.lower().replace('_', ' ')}" for s in ExitStatus)


class ConsoleReporter(Reporter):
    """Prints one line per stage (with its time) and warnings to the console's stderr."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        if not self.quiet:
            self.console.say(f"  {name} ...")
        yield
        if not self.quiet:
            self.console.say(f"  {name} done in {time.perf_counter() - started:.1f} s")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.say(f"    {message}")

    def warn(self, message: str) -> None:
        self.console.say(f"warning: {message}", fg="yellow")


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
    return call(action, Console(), traceback=traceback)


@click.group(epilog=f"Exit statuses:\n\n{EXIT_STATUSES}", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit-deploy", prog_name="edgekit")
def main() -> None:
    """Prune, quantize, export and verify PyTorch models for phones, Macs and boards."""


@main.command(cls=JsonCommand, epilog=f"Exit statuses:\n\n{EXIT_STATUSES}")
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
@click.option(
    "--repair/--no-repair",
    default=True,
    show_default=True,
    help="when int8 misses the gate: diagnose per layer and try the repair ladder (repair.* in the recipe)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout, on every exit")
@click.option("--verbose", "-v", is_flag=True, help="show what converters and runtimes print, live (else: a log)")
@click.option("--traceback", is_flag=True, help="show the full error chain")
def build(model: str, as_json: bool, verbose: bool, traceback: bool, **options: Any) -> None:
    """Build a verified artifact of MODEL for one target.

    MODEL is a .pt2 (torch.export.save), a TorchScript file, MODULE:FACTORY or file.py:factory, or a
    pickled module with --allow-pickle. What converters and runtimes print goes to a log file
    (~/.cache/edgekit/logs/NAME-TARGET.log, named on failure) unless --verbose.
    """
    from edgekit.commands.session import build_log, sigterm_interrupts, terminal_streams

    log = None if verbose else build_log(model, options["name"], options["target"])
    with terminal_streams(log) as terminal:
        console = Console(as_json=as_json, out=terminal[0], err=terminal[1], log=log)
        reporter = ConsoleReporter(quiet=as_json, console=console)
        if not as_json:
            console.say(f"edgekit: building {model} for {options['target']}")
        # Converters print progress on stdout; keep stdout for the summary (and clean --json). SIGTERM (timeout,
        # CI cancellation) takes the Ctrl-C path: the work and .partial folders are removed, exit 130.
        with redirect_stdout(sys.stderr), sigterm_interrupts():
            result = call(partial(api.build, model, reporter=reporter, **options), console, traceback=traceback,
                          details=_kept_artifact)  # fmt: skip
        for warning in (*result.manifest.warnings, *result.manifest.latency.get("warnings", ())):
            reporter.warn(warning)
        summary = summarize(result.manifest, result.path)
        if as_json:
            console.emit(envelope(0, artifact_dir=result.path, log=None if log is None else str(log), **summary))
        else:
            console.result(render_summary(summary))


def _kept_artifact(exc: EdgekitError) -> dict[str, Any]:
    """Return the JSON fields of a failed build: the artifact it kept (--allow-accuracy-failure), metrics, gate.

    Without a kept artifact, the metrics and gate are what the build measured before it stopped
    (`exc.measured`, set by the pipeline); `metrics` and `gate` are always there, empty when nothing ran.
    """
    if exc.artifact is not None:
        from edgekit.manifest import read_manifest

        try:
            manifest = read_manifest(exc.artifact)
        except EdgekitError:
            pass
        else:
            return {"artifact_dir": exc.artifact, **summarize(manifest, exc.artifact)}
    accuracy = dict((exc.measured or {}).get("accuracy", {}))
    fields: dict[str, Any] = {
        "accuracy_status": accuracy.get("status"),
        "reason": accuracy.get("reason"),
        "metrics": dict(accuracy.get("metrics", {})),
        "gate": _gate_fields(accuracy.get("gate")),
        "warnings": list((exc.measured or {}).get("warnings", ())),
    }
    return fields if exc.artifact is None else {"artifact_dir": exc.artifact, **fields}


def _gate_fields(gate: Any) -> dict[str, Any] | None:
    return None if not gate else {"rule": gate["rule"], "value": gate["value"], "passed": gate["passed"]}


@main.command(cls=JsonCommand)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.option("--traceback", is_flag=True)
def inspect(artifact: Path, as_json: bool, traceback: bool) -> None:
    """Show what an artifact is, how it was made and how accurate it measured.

    Exits 5 when a file differs from the manifest and 7 when the artifact failed its accuracy gate.
    """
    console = Console(as_json=as_json)
    where = {"artifact_dir": artifact}
    manifest, file_problems = call(lambda: api.inspect(artifact), console, traceback=traceback, details=lambda _: where)
    summary = {**summarize(manifest, artifact), "file_problems": file_problems}
    status, message, color = ExitStatus.OK, None, "red"
    if file_problems:
        status, message = ExitStatus.BAD_INPUT, "files differ from the manifest: " + "; ".join(file_problems)
    elif manifest.gate_failed:
        status, message = (
            ExitStatus.ACCURACY_FAILED,
            f"this artifact FAILED its accuracy gate: {_gate_line(summary['gate'])}",
        )
    elif manifest.inconclusive:
        status, color = ExitStatus.INCONCLUSIVE, "yellow"
        message = f"this artifact's accuracy is inconclusive: {manifest.accuracy.reason}"
    if as_json:
        console.emit(envelope(status, artifact_dir=artifact, message=message, **summary))
    else:
        console.result(render_summary(summary))
    if message:
        console.say(message, fg=color)
    if status:
        sys.exit(status)


@main.command(cls=JsonCommand)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", "-d", type=click.Path(path_type=Path), help="re-measure the artifact on this data")
@click.option("--model", help="the source model, when it is no longer where the manifest says")
@click.option("--on", help="also run it on the target's CPU: aarch64 (emulated here) or ssh://user@host[:port]")
@click.option("--cpu", type=click.Choice(EMULATED_CPUS), help="the emulated CPU for --on aarch64 [default: cortex-a72]")
@click.option("--json", "as_json", is_flag=True)
@click.option("--verbose", "-v", is_flag=True, help="show what runtimes print, live (else: a log)")
@click.option("--traceback", is_flag=True)
def verify(
    artifact: Path,
    data: Path | None,
    model: str | None,
    on: str | None,
    cpu: str | None,
    as_json: bool,
    verbose: bool,
    traceback: bool,
) -> None:
    """Check an artifact: files against the manifest, golden self-test in its runtime, recorded gate.

    With --data, measure it again against float outputs re-computed from the source model. Exits 0
    only when every check that ran held; 7 when the golden outputs differ or a gate failed.
    """
    from edgekit.commands.session import log_path, terminal_streams

    log = None if verbose else log_path(f"verify-{artifact.resolve().name}")
    with terminal_streams(log) as (out, err):
        console = Console(as_json=as_json, out=out, err=err, log=log)
        where = {"artifact_dir": artifact}
        with redirect_stdout(sys.stderr):
            action = partial(api.verify, artifact, data=data, model=model, on=on, cpu=cpu)
            found = call(action, console, traceback=traceback, details=lambda _: where)
        status = found.exit_status
        if as_json:
            message = ("; ".join(found.problems) or f"accuracy {found.status}") if status else None
            console.emit(envelope(status, artifact_dir=artifact, message=message, **_plain(found)))
        else:
            console.result(render_verify(found))
        for warning in found.warnings:
            console.say(f"warning: {warning}", fg="yellow")
    if status:
        sys.exit(status)


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
        "pruned_float_bytes": manifest.size.pruned_float_bytes,  # a pruned build; "float" is the unpruned model
        "latency_ms": latency.get("artifact", {}).get("median_ms"),
        "float_latency_ms": latency.get("float", {}).get("median_ms"),
        "latency_over_float": latency.get("artifact_over_float"),
        "warnings": list(manifest.warnings),
    }


_FIDELITY = (
    ("sqnr_db", "SQNR", " dB"),
    ("cosine", "cosine", ""),
    ("top1_agreement", "top-1 agreement", "%"),
    ("pixel_agreement", "pixel agreement", "%"),
    ("exact_agreement", "exact agreement", "%"),
)


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
    # Which metrics exist depends on the first output's shape (class scores, maps, integers): show those present.
    shown = [(k, label, unit) for k, label, unit in _FIDELITY if isinstance(m.get(k), int | float)]
    if shown:
        lines.append(
            "  fidelity " + ", ".join(f"{label} {m[k]:.{4 if k == 'cosine' else 1}f}{unit}" for k, label, unit in shown)
        )
    if s["gate"]:
        lines.append(f"  gate     {_gate_line(s['gate'])}")
    ratio = f" ({s['size_over_float']:.2f}x float)" if s["size_over_float"] else ""
    if s.get("pruned_float_bytes") and s["size_over_float"]:
        pruned = s["pruned_float_bytes"] / 1e6
        ratio = f" ({s['size_over_float']:.2f}x the unpruned float; pruned float {pruned:.3f} MB)"
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
main.add_command(run)
main.add_command(bundle)
main.add_command(doctor)
main.add_command(bench)
main.add_command(explain)

if __name__ == "__main__":
    main()
