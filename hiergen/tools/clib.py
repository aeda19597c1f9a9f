"""libhiergen (the C library, runtime/c) from Python through ctypes: build it, load it, generate.

    from hiergen.tools.clib import CModel, build
    lib = build()                                     # CMake build in build/clib (incremental), -> libhiergen.so
    model = CModel.load("models/default", lib=lib)
    out = model.generate("a small red circle moves left slowly", frames=33, seed=0)
    out.tokens (F, g, g) int64, out.frames (F, H, W, 3) uint8, out.fps

Used by the tests (tests/test_clib.py) and `hiergen bench` (the C library's column). Torch-free; it needs
cmake and a C++ compiler to build, ctypes only to load. `python -m hiergen.tools.clib build [--asan]`
builds from the command line (make clib).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiergen.errors import HiergenError

ROOT = Path(__file__).resolve().parents[2]
BUILD = {False: ROOT / "build" / "clib", True: ROOT / "build" / "clib-asan"}
ORT_ROOT = ROOT / "build" / "onnxruntime"


class ClibError(HiergenError, RuntimeError):
    """A failed libhiergen call: the status name and the library's message."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def missing_tools() -> list[str]:
    """Build tools this machine lacks (empty when libhiergen can be built here)."""
    return [t for t in ("cmake", "c++") if shutil.which(t) is None]


def build(asan: bool = False, jobs: int = 2, quiet: bool = True) -> Path:
    """Configure and build libhiergen (incremental): build/clib, or build/clib-asan with AddressSanitizer +
    UndefinedBehaviorSanitizer. Gets ONNX Runtime first (scripts/get-onnxruntime.sh). Returns the .so path."""
    out = BUILD[asan]
    run = dict(cwd=ROOT, check=True, capture_output=quiet, text=True)
    try:
        if not (ORT_ROOT / "include" / "onnxruntime_cxx_api.h").is_file():
            subprocess.run(["bash", "scripts/get-onnxruntime.sh", str(ORT_ROOT)],
                           env={**os.environ, "PYTHON": sys.executable}, **run)
        if not (out / "CMakeCache.txt").is_file():
            gen = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.run(["cmake", "-S", ".", "-B", str(out), *gen, f"-DONNXRUNTIME_ROOT={ORT_ROOT}",
                            f"-DHIERGEN_SANITIZE={'ON' if asan else 'OFF'}",   # unoptimised: it compiles faster
                            f"-DHIERGEN_EXAMPLES={'OFF' if asan else 'ON'}",
                            f"-DCMAKE_BUILD_TYPE={'Debug' if asan else 'Release'}"], **run)
        subprocess.run(["cmake", "--build", str(out), "-j", str(jobs)], **run)
    except subprocess.CalledProcessError as e:
        raise HiergenError(f"building libhiergen failed ({' '.join(e.cmd)}):\n{e.stdout or ''}{e.stderr or ''}") from None
    return out / "libhiergen.so"


class _Video(ctypes.Structure):
    _fields_ = [("n_frames", ctypes.c_int32), ("height", ctypes.c_int32), ("width", ctypes.c_int32),
                ("fps", ctypes.c_double), ("rgb", ctypes.POINTER(ctypes.c_uint8)), ("grid", ctypes.c_int32),
                ("tokens", ctypes.POINTER(ctypes.c_int64))]


PROGRESS = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p)


def open_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path or BUILD[False] / "libhiergen.so"))
    P, I, U8 = ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_uint8)
    sigs = {
        "hiergen_last_error": (ctypes.c_char_p, []),
        "hiergen_status_name": (ctypes.c_char_p, [ctypes.c_int]),
        "hiergen_model_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, I, ctypes.POINTER(P)]),
        "hiergen_model_free": (None, [P]),
        "hiergen_model_device": (ctypes.c_char_p, [P]),
        "hiergen_default_params": (P, []),
        "hiergen_params_free": (None, [P]),
        "hiergen_params_set_frames": (ctypes.c_int, [P, I]),
        "hiergen_params_set_seed": (ctypes.c_int, [P, ctypes.c_uint64]),
        "hiergen_params_set_temperature": (ctypes.c_int, [P, ctypes.c_double]),
        "hiergen_params_set_top_k": (ctypes.c_int, [P, I]),
        "hiergen_params_set_top_p": (ctypes.c_int, [P, ctypes.c_double]),
        "hiergen_params_set_strict": (ctypes.c_int, [P, ctypes.c_bool]),
        "hiergen_params_set_progress": (ctypes.c_int, [P, PROGRESS, P]),
        "hiergen_params_set_init_image": (ctypes.c_int, [P, U8, I, I]),
        "hiergen_params_set_keyframes": (ctypes.c_int, [P, U8, I, I, I]),
        "hiergen_generate": (ctypes.c_int, [P, ctypes.c_char_p, P, ctypes.POINTER(ctypes.POINTER(_Video))]),
        "hiergen_video_free": (None, [ctypes.POINTER(_Video)]),
        "hiergen_test_uniform": (ctypes.c_double, [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]),
        "hiergen_test_sample": (ctypes.c_int64, [ctypes.POINTER(ctypes.c_float), I, ctypes.c_double, ctypes.c_double,
                                                 I, ctypes.c_double]),
        "hiergen_test_keyframe_rate": (I, [P, ctypes.c_char_p]),
        "hiergen_test_encode": (I, [P, ctypes.c_char_p, I, ctypes.c_bool, ctypes.POINTER(ctypes.c_int64), I]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


@dataclass
class CVideo:
    tokens: np.ndarray      # (F, g, g) int64
    frames: np.ndarray      # (F, H, W, 3) uint8
    fps: float


class CModel:
    """A loaded libhiergen model (hiergen_model); close() frees it (also on garbage collection)."""

    def __init__(self, lib: ctypes.CDLL, handle: int):
        self.lib, self.handle = lib, handle

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", threads: int = 0,
             lib: ctypes.CDLL | str | os.PathLike | None = None) -> "CModel":
        lib = lib if isinstance(lib, ctypes.CDLL) else open_library(lib)
        h = ctypes.c_void_p()
        st = lib.hiergen_model_load(os.fsencode(path), backend.encode(), threads, ctypes.byref(h))
        _check(lib, st)
        return cls(lib, h.value)

    @property
    def device(self) -> str:
        return self.lib.hiergen_model_device(self.handle).decode()

    def generate(self, prompt: str, frames: int = 33, seed: int = 0, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, strict: bool = False,
                 init_image: np.ndarray | None = None, keyframes: np.ndarray | None = None, progress=None) -> CVideo:
        lib, p = self.lib, self.lib.hiergen_default_params()
        keep = []
        try:
            _check(lib, lib.hiergen_params_set_frames(p, frames))
            _check(lib, lib.hiergen_params_set_seed(p, seed))
            if temperature is not None:
                _check(lib, lib.hiergen_params_set_temperature(p, temperature))
            if top_k is not None:
                _check(lib, lib.hiergen_params_set_top_k(p, top_k))
            if top_p is not None:
                _check(lib, lib.hiergen_params_set_top_p(p, top_p))
            _check(lib, lib.hiergen_params_set_strict(p, strict))
            if progress is not None:
                cb = PROGRESS(lambda stage, done, total, _: bool(progress(stage.decode(), done, total)))
                keep.append(cb)
                _check(lib, lib.hiergen_params_set_progress(p, cb, None))
            if init_image is not None:
                a = np.ascontiguousarray(init_image, np.uint8)
                _check(lib, lib.hiergen_params_set_init_image(p, _u8(a), a.shape[1], a.shape[0]))
            if keyframes is not None:
                a = np.ascontiguousarray(keyframes, np.uint8)
                _check(lib, lib.hiergen_params_set_keyframes(p, _u8(a), a.shape[0], a.shape[2], a.shape[1]))
            out = ctypes.POINTER(_Video)()
            _check(lib, lib.hiergen_generate(self.handle, prompt.encode(), p, ctypes.byref(out)))
            try:
                v = out.contents
                F, g, H, W = v.n_frames, v.grid, v.height, v.width
                tokens = np.ctypeslib.as_array(v.tokens, (F * g * g,)).reshape(F, g, g).copy()
                rgb = np.ctypeslib.as_array(v.rgb, (F * H * W * 3,)).reshape(F, H, W, 3).copy()
                return CVideo(tokens, rgb, v.fps)
            finally:
                lib.hiergen_video_free(out)
        finally:
            lib.hiergen_params_free(p)

    def close(self) -> None:
        if self.handle:
            self.lib.hiergen_model_free(self.handle)
            self.handle = None

    def __del__(self):
        self.close()


def _u8(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status:
        raise ClibError(lib.hiergen_status_name(status).decode(), lib.hiergen_last_error().decode())


if __name__ == "__main__":
    if sys.argv[1:2] != ["build"]:
        sys.exit("usage: python -m hiergen.tools.clib build [--asan]")
    tools = missing_tools()
    if tools:
        sys.exit(f"cannot build libhiergen: {', '.join(tools)} not found (apt-get install cmake g++)")
    print(build(asan="--asan" in sys.argv, quiet=False))
