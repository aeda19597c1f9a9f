"""Per-channel smoothing of the LayerNorm -> weight MatMul pairs before int8 quantisation (SmoothQuant's
migration, folded into the LayerNorm).

    scales = smoothing_scales(protos, samples)        # {model: {LayerNorm scale name: s}}
    smooth(proto, scales["t2i"])                       # in place, before quantize_dynamic / quantize_static

A decode step's MatMul activation is quantised per tensor: one scale for all
128 channels of a row. In the LayerNorm outputs that feed the QKV and MLP-up
projections the largest channels reach 2-4x the median channel's magnitude
(maxima over calibration steps, the LayerNorm's learnt gains and biases), so
one scale fitted to those leaves the typical channel a fraction of the int8
levels. Measured on validation prompts, those two projections
left in float recover more of what int8 loses in next-token agreement than
any other weight MatMul (docs/precision.md, "Smoothing the LayerNorm
outputs").

Smoothing divides channel j of the LayerNorm's output by s_j (its gain and
bias divided by s_j) and multiplies row j of every MatMul weight that reads
it by s_j: the float graph computes the same function (up to rounding), and
the activation's channels even out while the weights, quantised per output
channel, take the spread. s_j = max|a_j|^alpha / max|w_j|^(1 - alpha), a_j
the channel's largest magnitude over the calibration set (every graph of the
model), w_j row j over every weight that reads it.

The same s goes into every graph of one model (prefill, decode and step
graphs share the LayerNorm by name), so tensors the fp32 package shares
between graphs stay identical after smoothing and the shared weights file
still stores each once.
"""
from __future__ import annotations

import numpy as np

ALPHA = 0.5                      # SmoothQuant's usual balance; each flavour's default is in quantize.SMOOTHING
_FLOOR = 1e-5


def smoothable(proto, keep_float: frozenset[str] | set[str] = frozenset()) -> dict[str, list]:
    """{LayerNorm scale initializer: [the MatMul nodes reading its output]} for every LayerNormalization whose
    output feeds only MatMuls with an initializer as B, none of them in `keep_float` (the float logits head:
    nothing to gain there), each such weight read by that MatMul alone and the LayerNorm's scale and bias
    initializers read by it alone."""
    inits = {t.name for t in proto.graph.initializer}
    readers: dict[str, list] = {}
    for n in proto.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    out = {}
    for n in proto.graph.node:
        if n.op_type != "LayerNormalization" or len(n.input) < 3 or not all(x in inits for x in n.input[1:3]):
            continue
        users = readers.get(n.output[0], [])
        if (users and n.output[0] not in {o.name for o in proto.graph.output}
                and all(u.op_type == "MatMul" and u.input[0] == n.output[0] and u.input[1] in inits
                        and len(readers[u.input[1]]) == 1 and u.name not in keep_float for u in users)
                and all(len(readers[x]) == 1 for x in n.input[1:3])):
            out[n.input[1]] = users
    return out


def _keep_max(into: dict[str, np.ndarray], key: str, m: np.ndarray) -> None:
    into[key] = np.maximum(into[key], m) if key in into else m


def _layer_norms(proto) -> dict[str, object]:
    return {n.input[1]: n for n in proto.graph.node if n.op_type == "LayerNormalization"}


def activation_maxima(proto, feeds: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """{LayerNorm scale name: per-channel max |output|} of the float graph over `feeds` (its inputs `names`)."""
    import onnx
    import onnxruntime as ort
    lns = _layer_norms(proto)
    p = onnx.ModelProto()
    p.CopyFrom(proto)
    for key in names:
        p.graph.output.append(onnx.helper.make_tensor_value_info(lns[key].output[0], onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(p.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    wanted = [lns[k].output[0] for k in names]
    out: dict[str, np.ndarray] = {}
    for f in feeds:
        for key, y in zip(names, sess.run(wanted, {k: f[k] for k in inputs})):
            _keep_max(out, key, np.abs(y.reshape(-1, y.shape[-1])).max(axis=0))
    return out


def smoothing_scales(protos: dict[str, tuple[str, object, set[str]]], samples: dict[str, list[dict]],
                     alpha: float = ALPHA) -> dict[str, dict[str, np.ndarray]]:
    """{model: {LayerNorm scale name: s}} from the fp32 graphs `protos` ({fragment: (model, ModelProto, names
    of the nodes kept float)}) and the calibration feeds per fragment. A LayerNorm is smoothed only where every
    graph of the model that holds it can be (smoothable), so all of them change together."""
    from onnx import numpy_helper
    act: dict[str, dict[str, np.ndarray]] = {}
    wmax: dict[str, dict[str, np.ndarray]] = {}
    blocked: dict[str, set[str]] = {}
    for name, (model, proto, keep_float) in protos.items():
        ok = smoothable(proto, keep_float)
        blocked.setdefault(model, set()).update(set(_layer_norms(proto)) - set(ok))
        inits = {t.name: t for t in proto.graph.initializer}
        for key, users in ok.items():
            w = np.max([np.abs(numpy_helper.to_array(inits[u.input[1]])).max(axis=1) for u in users], axis=0)
            _keep_max(wmax.setdefault(model, {}), key, w)
        if samples.get(name) and ok:
            for key, m in activation_maxima(proto, samples[name], list(ok)).items():
                _keep_max(act.setdefault(model, {}), key, m)
    out: dict[str, dict[str, np.ndarray]] = {}
    for model, d in act.items():
        for key, a in d.items():
            if key in blocked.get(model, ()):
                continue
            w = wmax[model][key]
            s = np.maximum(a, _FLOOR) ** alpha / np.maximum(w, _FLOOR) ** (1 - alpha)
            out.setdefault(model, {})[key] = (s / np.exp(np.log(s).mean())).astype(np.float32)  # geometric mean 1
    return out


def smooth(proto, scales: dict[str, np.ndarray], keep_float: frozenset[str] | set[str] = frozenset()) -> int:
    """Fold `scales` ({LayerNorm scale name: s}) into the graph in place: the LayerNorm's gain and bias over s,
    each reading MatMul's weight rows times s. Returns how many LayerNorms were smoothed."""
    from onnx import numpy_helper
    inits = {t.name: t for t in proto.graph.initializer}
    lns = _layer_norms(proto)
    ok = smoothable(proto, keep_float)
    done = 0
    for key, s in scales.items():
        if key not in ok:
            continue
        ln = lns[key]
        for x in ln.input[1:3]:
            t = inits[x]
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) / s).astype(np.float32), t.name))
        for u in ok[key]:
            t = inits[u.input[1]]
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) * s[:, None]).astype(np.float32), t.name))
        done += 1
    return done
