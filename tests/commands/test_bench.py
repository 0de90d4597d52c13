"""`edgekit bench`: latency, peak memory and the float comparison of an artifact in its runtime, and --profile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit import benchmark
from edgekit.cli import main
from edgekit.errors import ExitStatus, MissingDependencyError, UsageError
from edgekit.profiling.executorch import rank_events
from edgekit.profiling.onnxruntime import parse_trace
from tests.commands.conftest import copy_artifact


def test_bench_json_reports_latency_memory_and_the_builds_float_ratio(cli: CliRunner, digits_rpi: Path) -> None:
    result = cli.invoke(main, ["bench", str(digits_rpi), "--runs", "40", "--warmup", "3", "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == 0 and found["status"] == "ok", result.stderr
    latency, memory, vs = found["latency"], found["memory"], found["vs_float"]
    assert latency["runs"] == 40 and latency["warmup"] == 3 and 0 < latency["median_ms"] <= latency["p90_ms"]
    assert memory["peak_growth_bytes"] > 0 and "VmHWM" in memory["method"]
    recorded = edgekit.read_manifest(digits_rpi).latency  # the build's interleaved float-vs-artifact timing
    assert vs["source"] == "manifest" and vs["artifact_over_float"] == recorded["artifact_over_float"]
    assert "not kept" in vs["note"] and found["runtime"].startswith("onnxruntime ") and found["profile"] is None


def test_rpi_profile_ranks_the_nodes_onnxruntime_runs(cli: CliRunner, digits_rpi: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    result = cli.invoke(main, ["bench", str(digits_rpi), "--profile", "--runs", "30", "--top", "4", "--json"])

    profile = json.loads(result.stdout)["profile"]
    assert result.exit_code == 0 and profile["available"] and profile["tool"] == "onnxruntime profiling"
    # ORT fuses the QDQ graph (QuantizeLinear -> Conv -> ... becomes QLinearConv) before it runs: compare with
    # the graph it optimized, saved by a session of its own.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(digits_rpi / "model.onnx"), options, providers=["CPUExecutionProvider"])
    graph = {node.name: node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    ops = profile["ops"]
    assert len(ops) == 4 and profile["op_count"] == len(graph)
    assert all(graph[op["name"]] == op["op_type"] and op["calls"] == 30 for op in ops)  # real nodes, warm-up dropped
    assert [op["median_ms"] for op in ops] == sorted((op["median_ms"] for op in ops), reverse=True)
    assert "QLinearConv" in {op["op_type"] for op in ops}  # the int8 convolutions, not float ones


def test_android_profile_comes_from_etdump_with_xnnpack_operators(digits_android: Path) -> None:
    found = edgekit.bench(digits_android, runs=30, warmup=2, profile=True, top=20)

    assert isinstance(found, edgekit.BenchResult) and found.runtime.startswith("executorch ")
    profile = found.profile
    assert profile is not None and profile.available and profile.tool == "executorch etdump"
    assert all(op.delegated and op.calls == 30 for op in profile.ops)  # every op ran inside XNNPACK
    assert any(op.op_type.startswith("Convolution (NHWC, QC8)") for op in profile.ops)  # int8 convolutions
    assert "DELEGATE_CALL" not in {op.name for op in profile.ops} and profile.run_ms is not None
    assert found.latency.median_ms > 0 and found.memory.peak_growth_bytes is not None


def test_bench_text_names_each_figure_and_its_source(cli: CliRunner, digits_android: Path) -> None:
    result = cli.invoke(main, ["bench", str(digits_android), "--runs", "20", "--profile", "--top", "3"])

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["artifact", "latency", "memory"]
    assert "x float latency at build time" in result.stdout and "executorch etdump" in result.stdout


@pytest.mark.slow
def test_a_core_ml_artifact_cannot_be_benchmarked_off_macos(cli: CliRunner, digits_ios: Path) -> None:
    result = cli.invoke(main, ["bench", str(digits_ios), "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == ExitStatus.MISSING_DEPENDENCY == found["exit_status"]
    assert "cannot benchmark model.mlpackage" in found["message"] and "macOS" in found["hint"]
    with pytest.raises(MissingDependencyError):
        edgekit.bench(digits_ios)


def test_a_changed_file_stops_bench_before_anything_runs(cli: CliRunner, digits_rpi: Path, tmp_path: Path) -> None:
    folder = copy_artifact(digits_rpi, tmp_path)
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"\0")

    result = cli.invoke(main, ["bench", str(folder), "--json"])

    found = json.loads(result.stdout)
    assert result.exit_code == ExitStatus.BAD_INPUT == found["exit_status"] and "model.onnx" in found["message"]


def test_counts_out_of_range_are_usage_errors(cli: CliRunner, digits_rpi: Path) -> None:
    assert cli.invoke(main, ["bench", str(digits_rpi), "--runs", "0"]).exit_code == ExitStatus.USAGE
    with pytest.raises(UsageError) as caught:
        edgekit.bench(digits_rpi, warmup=-1)
    assert caught.value.status == ExitStatus.USAGE


def test_peak_memory_catches_an_allocation_freed_before_it_is_read() -> None:
    assert benchmark._reset_peak(), "this test needs Linux /proc/self/clear_refs"
    before = benchmark._resident("VmRSS")
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    del block

    memory = benchmark._memory(before)

    # the kernel updates its resident counters in batches of pages: allow that much short of 64 MiB
    assert memory.peak_growth_bytes is not None and memory.peak_growth_bytes >= 60 * 2**20


def test_ort_trace_drops_warm_up_runs_and_ranks_by_median() -> None:
    def node(name: str, op: str, us: int) -> dict[str, object]:
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": us, "args": {"op_name": op}}

    warmup = [node("conv", "Conv", 9000), node("relu", "Relu", 9000)]
    timed = [node("conv", "Conv", 30), node("relu", "Relu", 10)] * 3
    runs = [{"cat": "Session", "name": "model_run", "dur": d} for d in (9999, 50, 40, 60)]

    profile = parse_trace(warmup + timed + runs, runs=3, top=5)

    assert [(op.name, op.op_type, op.median_ms, op.calls) for op in profile.ops] == [
        ("conv", "Conv", 0.03, 3),
        ("relu", "Relu", 0.01, 3),
    ]
    assert profile.ops[0].share == pytest.approx(0.75) and profile.run_ms == pytest.approx(0.05)


def test_etdump_events_skip_wrappers_when_the_delegate_lists_its_operators() -> None:
    events = [
        ("Method::execute", False, [0.5, 0.1, 0.1]),
        ("DELEGATE_CALL", False, [0.4, 0.08, 0.08]),
        ("Fully Connected (NC, QS8) #1", True, [0.3, 0.05, 0.05]),
        ("Convert (NC) #1", True, [0.1, 0.01, 0.01]),
    ]

    profile = rank_events(events, runs=2, top=10)

    assert [op.op_type for op in profile.ops] == ["Fully Connected (NC, QS8)", "Convert (NC)"]
    assert profile.run_ms == pytest.approx(0.1) and profile.notes == ()
    undelegated = rank_events([("DELEGATE_CALL", False, [0.2]), ("native_call_add.out", False, [0.1])], runs=1, top=5)
    assert {op.name for op in undelegated.ops} == {"DELEGATE_CALL", "native_call_add.out"} and undelegated.notes
