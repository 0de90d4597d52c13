"""Run an ONNX model on the named inputs of an edgekit request folder; write the named outputs back.

This file runs on the other side (an emulated aarch64 userland, a Raspberry Pi over ssh) and needs
only Python 3, numpy and onnxruntime there: it imports nothing from edgekit.

    python3 run_onnx.py <request-dir>

<request-dir>/request.json names the artifact, the inputs and outputs (name, dtype, shape) and the
sample count; <request-dir>/samples/<i>/inputs/<name>.npy hold the inputs. It writes
samples/<i>/outputs/<name>.npy and result.json (runtime, version, samples that failed and why). A
batch-1 model runs a sample with a larger batch one row at a time; a sample saved without its batch
axis gets one. No timing is recorded: under emulation it means nothing.
Exit status: 0 every sample ran, 1 some sample failed, 2 usage or loading error.
"""

import json
import os
import sys


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: run_onnx.py <request-dir>\n")
        return 2
    folder = argv[1]
    result = {"protocol": 1, "runner": "run_onnx.py", "runtime": "onnxruntime", "runtime_version": "", "error": ""}
    result["failed"] = []
    try:
        with open(os.path.join(folder, "request.json"), encoding="utf-8") as f:
            request = json.load(f)
        result["samples"] = int(request["samples"])
        import numpy as np
        import onnxruntime as ort

        result["runtime_version"] = ort.__version__
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(request.get("threads", 1))
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            os.path.join(folder, request["artifact"]), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # reported in result.json for the caller, whatever it was
        result["error"] = f"{type(exc).__name__}: {exc}"
        _write(folder, result)
        sys.stderr.write(result["error"] + "\n")
        return 2
    model_inputs = {i.name: i for i in session.get_inputs()}
    names = [o["name"] for o in request["outputs"]]
    for i in range(result["samples"]):
        sample = os.path.join(folder, "samples", str(i))
        try:
            feeds = {}
            for spec in request["inputs"]:
                array = np.load(os.path.join(sample, "inputs", spec["name"] + ".npy"))
                rank = len(model_inputs[spec["name"]].shape)
                if array.ndim + 1 == rank:  # saved without its batch axis
                    array = array[None]
                feeds[spec["name"]] = np.ascontiguousarray(array, dtype=spec["dtype"])
            outputs = _run(session, names, feeds, model_inputs)
            os.makedirs(os.path.join(sample, "outputs"), exist_ok=True)
            for name, value in zip(names, outputs):  # noqa: B905 - boards may run Python < 3.10
                np.save(os.path.join(sample, "outputs", name + ".npy"), np.ascontiguousarray(value))
        except Exception as exc:  # one sample failing must not hide the others
            result["failed"].append({"sample": i, "error": f"{type(exc).__name__}: {exc}"})
            sys.stderr.write(f"sample {i}: {exc}\n")
    _write(folder, result)
    return 1 if result["failed"] else 0


def _run(session, names, feeds, model_inputs):
    """Run once, or one row at a time when the model takes batch 1 and the sample holds more."""
    import numpy as np

    rows = min(len(v) for v in feeds.values()) if feeds else 1
    batch_one = any(model_inputs[n].shape and model_inputs[n].shape[0] == 1 for n in feeds)
    if rows <= 1 or not batch_one:
        return session.run(names, feeds)
    results = [session.run(names, {k: v[r : r + 1] for k, v in feeds.items()}) for r in range(rows)]
    return [np.concatenate([res[j] for res in results]) for j in range(len(names))]


def _write(folder, result):
    with open(os.path.join(folder, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
