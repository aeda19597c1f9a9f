"""TensorRT engines behind the runtime's step-model interface: a Pipeline whose step models and codec run
engines (anything with run(feeds) -> {output name: array}, e.g. runtime/tensorrt.py's TrtEngine).

    pipe = load_engines("out/fp16")          # each fragment's engine built, or taken from the engine cache
    pipe.generate("a small red circle moves left slowly", frames=33, seed=0)

EngineSession stands in for the ONNX Runtime session under the runtime's own
OrtStepModel and host KV arena, so the generation loop, the arenas and the
sampler are the ones every other backend runs. Inputs and outputs are host
arrays: a decode step copies its inputs up and its outputs down (no
device-resident arena on this path). Tested with engines that are ONNX
Runtime sessions (tests/test_tensorrt.py); not run with TensorRT engines.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hiergen.runtime.backend import OrtStepModel
from hiergen.runtime.manifest import MODELS, Manifest
from hiergen.runtime.package import open_package
from hiergen.runtime.pipeline import Pipeline
from hiergen.runtime.tensorrt import EngineCache, TrtEngine, build_engine, default_cache_dir

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(uint8)": np.uint8}


def _host_view(ptr: int, dtype, shape) -> np.ndarray:
    """A numpy array over host memory at `ptr` (no copy)."""
    import ctypes
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer((ctypes.c_byte * n).from_address(ptr), dtype).reshape(shape) if n else np.empty(shape, dtype)


class _Binding:
    """The part of ONNX Runtime's IOBinding the host arena uses, recorded as host arrays."""

    def __init__(self):
        self.inputs: dict[str, np.ndarray] = {}
        self.outputs: dict[str, np.ndarray] = {}

    def bind_input(self, name, device, device_id, dtype, shape, ptr):
        self.inputs[name] = _host_view(ptr, dtype, shape)

    def bind_output(self, name, device, device_id, dtype, shape, ptr):
        self.outputs[name] = _host_view(ptr, dtype, shape)

    def bind_ortvalue_input(self, name, value):
        self.inputs[name] = _host_view(value.data_ptr(), _ORT_TYPES[value.data_type()], value.shape())


class EngineSession:
    """An engine (anything with run(feeds) -> {output name: array}: TrtEngine) behind the part of
    ort.InferenceSession that OrtStepModel and HostArena call: run(names, feeds), io_binding(),
    run_with_iobinding(). Inputs and outputs are host arrays, so the step model keeps a HostArena and a decode
    step copies its inputs up and its outputs down (no device-resident arena on this path yet)."""

    def __init__(self, engine, provider: str = "TensorRT engine"):
        self.engine, self.provider = engine, provider

    def get_providers(self) -> list[str]:
        return [self.provider]

    def run(self, names, feeds):
        out = self.engine.run(feeds)
        return [out[n] for n in (names or list(out))]

    def io_binding(self) -> _Binding:
        return _Binding()

    def run_with_iobinding(self, io: _Binding) -> None:
        out = self.engine.run(io.inputs)
        for name, dst in io.outputs.items():
            np.copyto(dst, out[name].reshape(dst.shape))


def engine_pipeline(pkg: str | os.PathLike, engines: dict):
    """A Pipeline (runtime/pipeline.py) whose step models and codec run `engines` (fragment name -> engine with
    run(feeds) -> outputs), e.g. {name: TrtEngine(build_engine(...))} for every fragment of the package."""
    root = Path(pkg)
    manifest = open_package(root)
    provider = next(iter(engines.values())).__class__.__name__

    def make_session(_pkg, spec, _providers, _threads):
        return EngineSession(engines[spec.name], provider)
    models = {}
    for k in MODELS:
        m = OrtStepModel(root, manifest, k, [provider], threads=1, make_session=make_session)
        m.on_device = False                     # engines read and write host arrays: the host arena
        models[k] = m
    return Pipeline(root, manifest, models, EngineCodec(manifest, engines), [provider])


class EngineCodec:
    """The VQ-VAE fragments as engines: uint8 RGB frames <-> int64 tokens."""

    def __init__(self, manifest: Manifest, engines: dict):
        enc, dec = manifest.fragment("vqvae", "encoder"), manifest.fragment("vqvae", "decoder")
        self.enc, self.dec = engines[enc.name], engines[dec.name]
        self.enc_io = (enc.inputs[0].name, enc.outputs[0].name)
        self.dec_io = (dec.inputs[0].name, dec.outputs[0].name)
        self.image_size = manifest.image_size

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self.dec.run({self.dec_io[0]: np.ascontiguousarray(tokens, np.int64)})[self.dec_io[1]]

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return self.enc.run({self.enc_io[0]: np.ascontiguousarray(frames, np.uint8)})[self.enc_io[1]]


def load_engines(pkg: str | os.PathLike, cache: EngineCache | None = None):
    """The package's Pipeline on TensorRT engines: each fragment's engine built or taken from the cache."""
    m = open_package(pkg)
    cache = cache or EngineCache(default_cache_dir(pkg))
    return engine_pipeline(pkg, {name: TrtEngine(build_engine(pkg, m, name, cache)) for name in m.fragments})
