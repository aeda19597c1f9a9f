"""The ONNX Runtime sessions' settings that change what runs, not just how fast."""
import json
import subprocess
import sys

import pytest

onnx = pytest.importorskip("onnx")

# Writes a one-node graph (y = x * 1) and runs a denormal through it in a fresh process, so that the
# process's first session, which sets the calling thread's flush-to-zero mode, is the one under test.
_PROBE = """
import json, sys
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, save
from hiergen.runtime.backend import session

folder, ours = sys.argv[1], sys.argv[2] == "ours"
graph = helper.make_graph(
    [helper.make_node("Mul", ["x", "one"], ["y"])], "probe",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    initializer=[helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), folder + "/probe.onnx")
if ours:
    from hiergen.runtime.manifest import FragmentSpec
    spec = FragmentSpec("probe", "probe.onnx", (), (), {})
    sess = session(__import__("pathlib").Path(folder), spec, ["CPUExecutionProvider"])
else:
    sess = ort.InferenceSession(folder + "/probe.onnx", providers=["CPUExecutionProvider"])
y = sess.run(None, {"x": np.full(4, 1e-40, np.float32)})[0]
print(json.dumps([float(v) for v in y]))
"""


def _probe(tmp_path, which: str) -> list[float]:
    r = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), which], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_sessions_flush_denormals_to_zero(tmp_path):
    # ONNX Runtime's default keeps the denormal; hiergen's sessions flush it (masked softmax scores
    # leave denormals that ran the interp prefill's softmax 6x slower, docs/runtime.md).
    assert all(v > 0 for v in _probe(tmp_path, "plain"))
    assert _probe(tmp_path, "ours") == [0.0] * 4


def test_small_cpu_decode_steps_run_on_one_intra_op_thread():
    """Below SINGLE_THREAD_BELOW sequences a CPU arena binds a one-thread session of the decode graph, one per
    batch size; from there on, or when the pipeline asked for one thread anyway, the pipeline's session."""
    from hiergen.runtime.backend import SINGLE_THREAD_BELOW, OrtStepModel
    from hiergen.runtime.package import open_package
    from hiergen.runtime.pipeline import DEFAULT_PACKAGE

    manifest = open_package(DEFAULT_PACKAGE)
    cpu = ["CPUExecutionProvider"]
    m = OrtStepModel(DEFAULT_PACKAGE, manifest, "interp", cpu)
    assert m.decode_sess.get_session_options().intra_op_num_threads == 0          # ONNX Runtime's default: all cores
    two, four, large = m.new_cache(2), m.new_cache(4), m.new_cache(SINGLE_THREAD_BELOW)
    assert large.sess is m.decode_sess and len({id(two.sess), id(four.sess), id(m.decode_sess)}) == 3
    assert all(a.sess.get_session_options().intra_op_num_threads == 1 for a in (two, four))
    assert m.new_cache(2).sess is two.sess                                   # made once per batch size
    one = OrtStepModel(DEFAULT_PACKAGE, manifest, "interp", cpu, threads=1)
    assert one.new_cache(2).sess is one.new_cache(4).sess is one.decode_sess


def test_sessions_stop_spinning_when_a_run_returns():
    """Every session's pool threads stop spinning after a run, so an idle session's pool does not take a
    core from the next session's run (docs/runtime.md, "Spinning"); denormals are flushed in each."""
    from hiergen.runtime.pipeline import Pipeline

    pipe = Pipeline.load(backend="cpu")
    sessions = [pipe.codec.enc, pipe.codec.dec]
    for m in pipe.models.values():
        sessions += [m.sess, m.prefill_sess, m.decode_sess, m.decode_session(2)]
    for s in sessions:
        opts = s.get_session_options()
        assert opts.get_session_config_entry("session.force_spinning_stop") == "1"
        assert opts.get_session_config_entry("session.set_denormal_as_zero") == "1"
