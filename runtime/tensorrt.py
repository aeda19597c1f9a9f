"""TensorRT engines from a model package, and ONNX Runtime's TensorRT EP options taken from the package.

    cache = EngineCache("~/.cache/hiergen/engines")
    path = build_engine("out/int8-qdq", manifest, "keyframe_decode", cache)   # or the cached engine if current
    engine = TrtEngine(path); outputs = engine.run(feeds)                       # run(feeds) -> outputs

Engines are built through the TensorRT Python API (10.x and 11.x) as strongly
typed networks: the ONNX graph carries its precision (fp16 types, or
symmetric int8 Q/DQ from `hiergen quantize`), so no FP16/INT8 builder flag is
set. TensorRT 11 has no such flags and always builds strongly typed;
TensorRT 10 deprecates them; they are used only for a TensorRT that has no
STRONGLY_TYPED network flag (9.x and older). Optimisation profiles are the
manifest's min/opt/max shapes of each input. Builds share a timing cache.

The engine cache is keyed by everything an engine depends on (EngineKey):
the fragment's SHA-256, the TensorRT version, the GPU's name and compute
capability, the precision and the profiles. An engine whose key file does not
match, or whose bytes no longer match the SHA-256 recorded at build time, is
stale: it is rebuilt, never loaded.

Not run here: no TensorRT and no GPU on the machines that wrote this; the
code follows the TensorRT 10/11 Python API documentation, and the tests cover
what does not need TensorRT (keys, staleness, profiles, options, the refusal).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hiergen.errors import HiergenError
from hiergen.fileio import hash_file
from hiergen.runtime.manifest import FragmentSpec, Manifest

INSTALL = ("TensorRT is not installed: pip install tensorrt (10.x or 11.x, with a CUDA 12 driver), or on a Jetson "
           "use JetPack 6's TensorRT 10.3 (apt install python3-libnvinfer)")
WORKSPACE = 1 << 30                    # bytes of scratch memory a build may use


class TensorRTError(HiergenError, RuntimeError):
    """TensorRT is missing or an engine cannot be built or loaded; the message says what to do."""


def require_tensorrt():
    """The tensorrt module, or a TensorRTError naming what to install."""
    if importlib.util.find_spec("tensorrt") is None:
        raise TensorRTError(INSTALL)
    import tensorrt
    return tensorrt


# ------------------------------------------------------------ profiles
def profiles(spec: FragmentSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """input name -> (min, opt, max) shape, from the manifest's profiles; inputs without one are fixed."""
    out = {}
    for t in spec.inputs:
        levels = [spec.profiles.get(lv, {}).get(t.name) for lv in ("min", "opt", "max")]
        if all(s is not None for s in levels):
            out[t.name] = tuple(tuple(int(d) for d in s) for s in levels)
        elif all(isinstance(d, int) for d in t.shape):
            out[t.name] = (tuple(t.shape),) * 3
        else:
            raise TensorRTError(f"{spec.name}: input {t.name} has symbolic axes {t.shape} and no min/opt/max profile "
                                "in the manifest: re-export the package with this hiergen")
    return out


# ------------------------------------------------------------ engine cache
@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; any change gives another digest, so another engine."""
    fragment: str
    fragment_sha256: str
    precision: str
    tensorrt: str                       # TensorRT version
    gpu: str                            # device name
    compute_capability: str             # e.g. "8.7" (Jetson Orin), "9.0" (H100/H200)
    profiles: str                       # the min/opt/max shapes, as JSON

    @classmethod
    def of(cls, spec: FragmentSpec, tensorrt: str, gpu: str, compute_capability: str) -> "EngineKey":
        return cls(spec.name, spec.sha256, spec.precision, tensorrt, gpu, compute_capability,
                   json.dumps(profiles(spec), sort_keys=True))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class EngineCache:
    """A folder of engines: <fragment>-<digest>.engine beside <...>.json (the key and the engine's SHA-256)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).expanduser()

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        stem = f"{key.fragment}-{key.digest()[:16]}"
        return self.folder / f"{stem}.engine", self.folder / f"{stem}.json"

    def lookup(self, key: EngineKey) -> Path | None:
        """The engine for `key`, or None when there is none or it is stale (key or bytes differ)."""
        engine, meta = self.paths(key)
        if not engine.is_file() or not meta.is_file():
            return None
        try:
            info = json.loads(meta.read_text())
        except ValueError:
            return None
        if info.get("key") != asdict(key) or info.get("engine_sha256") != hash_file(engine).hexdigest():
            return None
        return engine

    def store(self, key: EngineKey, data: bytes) -> Path:
        engine, meta = self.paths(key)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = engine.with_suffix(".engine.tmp")
        tmp.write_bytes(data)
        tmp.replace(engine)
        meta.write_text(json.dumps({"key": asdict(key), "engine_sha256": hashlib.sha256(data).hexdigest()},
                                   indent=1) + "\n")
        return engine

    @property
    def timing_cache(self) -> Path:
        return self.folder / "timing.cache"


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability) of device 0, through the CUDA runtime."""
    import ctypes

    from hiergen.runtime.arena import _load_cudart
    lib = _load_cudart()

    class Prop(ctypes.Structure):           # cudaDeviceProp begins with name[256]; the rest is read by attribute
        _fields_ = [("name", ctypes.c_char * 256), ("rest", ctypes.c_byte * 4096)]
    prop = Prop()
    if lib.cudaGetDeviceProperties(ctypes.byref(prop), 0):
        raise TensorRTError("no CUDA device: TensorRT engines need an NVIDIA GPU")
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.cudaDeviceGetAttribute(ctypes.byref(major), 75, 0)      # cudaDevAttrComputeCapabilityMajor
    lib.cudaDeviceGetAttribute(ctypes.byref(minor), 76, 0)      # cudaDevAttrComputeCapabilityMinor
    return prop.name.decode(), f"{major.value}.{minor.value}"


# ------------------------------------------------------------ build
def strongly_typed_flags(trt) -> int:
    """create_network's flags: STRONGLY_TYPED where this TensorRT has it (10.x; 11.x ignores it, always on)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if flag is not None else 0


def precision_flags(trt, precision: str, strongly_typed: bool) -> list:
    """Builder flags for a weakly typed build on an old TensorRT; none for strongly typed networks (the graph
    carries the precision) and none on a TensorRT that has removed them (11.x)."""
    if strongly_typed:
        return []
    names = {"fp16": ["FP16"], "int8-qdq": ["INT8", "FP16"], "int8-cpu": ["INT8"]}.get(precision, [])
    return [getattr(trt.BuilderFlag, n) for n in names if hasattr(trt.BuilderFlag, n)]


def build_engine(pkg: str | os.PathLike, manifest: Manifest, fragment: str, cache: EngineCache,
                 gpu: tuple[str, str] | None = None) -> Path:
    """The engine of one fragment: the cached one if its key matches, else built now and cached."""
    trt = require_tensorrt()
    spec = manifest.fragments[fragment]
    key = EngineKey.of(spec, trt.__version__, *(gpu or gpu_identity()))
    found = cache.lookup(key)
    if found is not None:
        return found
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = strongly_typed_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(Path(pkg) / spec.file)):      # external data read beside the file
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT {trt.__version__} cannot parse {spec.file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE)
    strongly_typed = bool(flags) or not hasattr(trt.BuilderFlag, "FP16")      # 11.x: always, and no flags
    for f in precision_flags(trt, spec.precision, strongly_typed):
        config.set_flag(f)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles(spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    timing = cache.timing_cache
    tc = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    config.set_timing_cache(tc, False)
    data = builder.build_serialized_network(network, config)
    if data is None:
        raise TensorRTError(f"TensorRT {trt.__version__} could not build {spec.file} at {spec.precision}")
    cache.folder.mkdir(parents=True, exist_ok=True)
    timing.write_bytes(bytes(tc.serialize()))
    return cache.store(key, bytes(data))


def build_all(pkg: str | os.PathLike, manifest: Manifest, cache: EngineCache, log=print) -> dict[str, Path]:
    out = {}
    for name in manifest.fragments:
        out[name] = build_engine(pkg, manifest, name, cache)
        log(f"{name}: {out[name]}")
    return out


# ------------------------------------------------------------ run (the backend interface: run(feeds) -> outputs)
class TrtEngine:
    """One deserialised engine with run(feeds) -> {output name: array}: host arrays in and out, device buffers
    through the CUDA runtime (TensorRT 10/11 name-based IO: set_input_shape, set_tensor_address,
    execute_async_v3)."""

    def __init__(self, path: str | os.PathLike):
        import ctypes

        from hiergen.runtime.arena import _load_cudart
        trt = require_tensorrt()
        self.trt, self.cuda, self.ctypes = trt, _load_cudart(), ctypes
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise TensorRTError(f"{path} does not load in TensorRT {trt.__version__}: rebuild it (hiergen build-engine)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def _malloc(self, nbytes: int) -> int:
        ptr = self.ctypes.c_void_p()
        if self.cuda.cudaMalloc(self.ctypes.byref(ptr), max(nbytes, 1)):
            raise TensorRTError(f"cudaMalloc of {nbytes} bytes failed")
        return ptr.value

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        c, trt, buffers = self.cuda, self.trt, []
        try:
            for n in self.inputs:
                a = np.ascontiguousarray(feeds[n])
                self.context.set_input_shape(n, a.shape)
                ptr = self._malloc(a.nbytes)
                buffers.append(ptr)
                c.cudaMemcpy(self.ctypes.c_void_p(ptr), self.ctypes.c_void_p(a.ctypes.data), a.nbytes, 1)
                self.context.set_tensor_address(n, ptr)
            host = {}
            for n in self.outputs:
                shape = tuple(self.context.get_tensor_shape(n))
                host[n] = np.empty(shape, trt.nptype(self.engine.get_tensor_dtype(n)))
                ptr = self._malloc(host[n].nbytes)
                buffers.append(ptr)
                self.context.set_tensor_address(n, ptr)
            if not self.context.execute_async_v3(0):
                raise TensorRTError("TensorRT execution failed")
            c.cudaStreamSynchronize(None)
            for n, ptr in zip(self.outputs, buffers[len(self.inputs):]):
                c.cudaMemcpy(self.ctypes.c_void_p(host[n].ctypes.data), self.ctypes.c_void_p(ptr), host[n].nbytes, 2)
            return host
        finally:
            for ptr in buffers:
                c.cudaFree(self.ctypes.c_void_p(ptr))


# ------------------------------------------------------------ ONNX Runtime's TensorRT EP
def _shapes(p: dict[str, tuple], level: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[level])}" for name, shapes in p.items())


def ort_trt_options(spec: FragmentSpec, cache_dir: str | os.PathLike, calibration_table: str | None = None) -> dict:
    """The TensorRT EP's provider options for one fragment, from the package: precision (fp16 graphs: fp16 on;
    int8-qdq graphs: int8 on, explicit Q/DQ, no table, since TensorRT refuses a calibration table for a graph
    with Q/DQ nodes), the manifest's profiles, engine and timing caches. calibration_table: an int8-qdq
    package's table for running its fp32 source graph with implicit INT8 (TensorRT 10 only)."""
    p = profiles(spec)
    opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
            "trt_fp16_enable": str(spec.precision == "fp16"), "trt_int8_enable": str(spec.precision == "int8-qdq"),
            "trt_profile_min_shapes": _shapes(p, 0), "trt_profile_opt_shapes": _shapes(p, 1),
            "trt_profile_max_shapes": _shapes(p, 2)}
    if calibration_table is not None:
        if spec.precision != "fp32":
            raise TensorRTError(f"{spec.name} is {spec.precision}: a calibration table goes with the fp32 graph "
                                "(TensorRT refuses one for a graph that already has Q/DQ nodes)")
        opts.update({"trt_int8_enable": "True", "trt_int8_calibration_table_name": str(calibration_table),
                     "trt_int8_use_native_calibration_table": "False"})
    return opts


def default_cache_dir(pkg: str | os.PathLike) -> Path:
    """Engines live beside the user's cache, one folder per package identity (its manifest's SHA-256)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hiergen" / "engines"
    return base / hash_file(Path(pkg) / "manifest.json").hexdigest()[:16]
