"""KV-cache arenas: one per generation stage, preallocated, bound to the step graph through IO binding.

Both arenas hold every past tensor of a step graph (the manifest's kv_cache
pairs), bind them once, and after each step copy the step's new keys/values
into them at the step's slots. No tensor grows and a decode step allocates
nothing.

HostArena (CPU execution provider): one numpy block; ONNX Runtime reads the
    bound host memory in place, and the new keys/values land in bound host
    buffers that numpy copies into the block.
DeviceArena (CUDA / TensorRT execution providers): OrtValues in device memory
    that never leave the device; a decode step's new keys/values are bound
    device outputs, copied into the arena by one strided device-to-device copy
    per past tensor (cudaMemcpy2D). Only tokens and codes go up (bound per
    step: a bound host input is copied at bind time) and only logits come back.

The device path is written against ONNX Runtime's documented Python IO-binding
API and the CUDA runtime's cudaMemcpy2D, and its logic is tested on the CPU
with host memory and a host copier (tests/test_arena.py); it has not been run
on a GPU (docs/runtime.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from typing import Protocol

import numpy as np
import onnxruntime as ort

HOST_TO_DEVICE, DEVICE_TO_DEVICE = 1, 3      # cudaMemcpyKind


class Copier(Protocol):
    def copy2d(self, dst: int, dpitch: int, src: int, spitch: int, width: int, height: int, kind: int) -> None: ...


class HostCopier:
    """copy2d over host memory: the device arena's logic, runnable without a GPU."""

    def copy2d(self, dst, dpitch, src, spitch, width, height, kind):
        for r in range(height):
            ctypes.memmove(dst + r * dpitch, src + r * spitch, width)


class CudaCopier:
    """cudaMemcpy2D from the CUDA runtime that onnxruntime-gpu loads (its pip wheel or the system's)."""

    def __init__(self):
        self.lib = _load_cudart()
        f = self.lib.cudaMemcpy2D
        f.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                      ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
        f.restype = ctypes.c_int

    def copy2d(self, dst, dpitch, src, spitch, width, height, kind):
        err = self.lib.cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind)
        if err:
            raise RuntimeError(f"cudaMemcpy2D failed with CUDA error {err}")


@functools.lru_cache(maxsize=1)
def cuda_copier() -> CudaCopier:
    """One CudaCopier per process: the CUDA runtime is loaded once, not per generation stage."""
    return CudaCopier()


def _load_cudart() -> ctypes.CDLL:
    names = [ctypes.util.find_library("cudart"), "libcudart.so.12", "libcudart.so.13", "libcudart.so"]
    site = os.path.dirname(os.path.dirname(ort.__file__))
    names += sorted(glob.glob(os.path.join(site, "nvidia", "cuda_runtime", "lib", "libcudart.so*")))
    for n in filter(None, names):
        try:
            return ctypes.CDLL(n)
        except OSError:
            continue
    raise RuntimeError("the CUDA runtime (libcudart) was not found: install onnxruntime-gpu with its CUDA "
                       "dependencies (pip install 'hiergen[gpu]') or use --backend cpu")


def _shape(spec_shape: list, batch: int) -> list[int]:
    """A manifest shape for one decode step: `batch` sequences, one new token."""
    return [batch if d == "batch" else 1 if d == "new_tokens" else d for d in spec_shape]


def _runs(slots: np.ndarray) -> list[tuple[int, int, int]]:
    """(first slot, index in slots, length) of each run of consecutive slots."""
    out, start = [], 0
    for i in range(1, len(slots) + 1):
        if i == len(slots) or slots[i] != slots[i - 1] + 1:
            out.append((int(slots[start]), start, i - start))
            start = i
    return out


class HostArena:
    """Arena in host memory (CPU execution provider); kv is (n_pairs, *past shape), one contiguous tensor per pair."""

    def __init__(self, model, batch: int):
        self.model, self.batch, self.written = model, batch, False
        n = len(model.pairs)
        self.kv = np.zeros((n, *_shape(model.past_shape, batch)), np.float32)
        self.new = np.zeros((n, *_shape(model.new_shape, batch)), np.float32)
        self.logits = np.zeros((batch, 1, model.image_vocab), np.float32)
        self.tokens = np.zeros((batch, 1), np.int64)
        self.codes = np.zeros((batch, 1), np.int64)
        self._lead = (slice(None),) * (1 + model.slot_axis)   # in kv and new: every axis before the slot axis
        io = model.sess.io_binding()
        for arr, name in ((self.tokens, model.tokens_name), (self.codes, model.codes_name)):
            _bind_host(io.bind_input, name, arr)
        _bind_host(io.bind_output, model.logits_name, self.logits)
        for i, (past, new) in enumerate(model.pairs):
            _bind_host(io.bind_input, past, self.kv[i])
            _bind_host(io.bind_output, new, self.new[i])
        self.io = io

    def _at(self, slot) -> tuple:
        return self._lead + (slot,)

    def decode(self, tokens: np.ndarray, codes: np.ndarray) -> np.ndarray:
        self.tokens[...] = tokens
        self.codes[...] = codes
        self.model.sess.run_with_iobinding(self.io)
        self.written = True
        self.kv[self._at(int(codes[0, 0]))] = self.new[self._at(0)]
        return self.logits

    def run_past(self, sess, tokens: np.ndarray, codes: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """A multi-token step over the arena (a prefill into a non-empty cache)."""
        m = self.model
        past = {name: self.kv[i] for i, (name, _) in enumerate(m.pairs)}
        return sess.run(names, {m.tokens_name: tokens, m.codes_name: codes, **past})

    def store(self, slots: np.ndarray, new: list[np.ndarray]) -> None:
        """Host new keys/values of a prefill (one per pair, T on the slot axis) -> kv at `slots`."""
        self.kv[self._at(slots)] = np.stack(new)
        self.written = True


class DeviceArena:
    """Arena in device memory (CUDA / TensorRT execution providers); see the module docstring."""

    def __init__(self, model, batch: int, device: str = "cuda", device_id: int = 0, copier: Copier | None = None):
        self.model, self.batch, self.written = model, batch, False
        self.copier = copier or cuda_copier()
        past, new = _shape(model.past_shape, batch), _shape(model.new_shape, batch)
        self._host = [np.zeros(past, np.float32) for _ in model.pairs]     # on "cpu" the OrtValues wrap these
        self.kv = [ort.OrtValue.ortvalue_from_numpy(z, device, device_id) for z in self._host]
        self.new = [ort.OrtValue.ortvalue_from_shape_and_type(new, np.float32, device, device_id)
                    for _ in model.pairs]
        self.logits = np.zeros((batch, 1, model.image_vocab), np.float32)
        io = model.sess.io_binding()
        _bind_host(io.bind_output, model.logits_name, self.logits)          # logits come back to the host
        for (past_name, new_name), kv, nv in zip(model.pairs, self.kv, self.new):
            io.bind_ortvalue_input(past_name, kv)
            io.bind_ortvalue_output(new_name, nv)
        self.io = io
        a = model.slot_axis
        self.rows = int(np.prod(past[:a]))                  # B * n_head: one row per (sequence, head)
        self.item = int(np.prod(past[a + 1:])) * 4          # bytes of one slot (head_dim floats)
        self.slots = past[a]

    def decode(self, tokens: np.ndarray, codes: np.ndarray) -> np.ndarray:
        m = self.model
        self.io.bind_cpu_input(m.tokens_name, np.ascontiguousarray(tokens))   # copied up at bind time
        self.io.bind_cpu_input(m.codes_name, np.ascontiguousarray(codes))
        m.sess.run_with_iobinding(self.io)
        self.io.synchronize_outputs()
        self.written = True
        slot = int(codes[0, 0])
        for kv, nv in zip(self.kv, self.new):
            self.copier.copy2d(kv.data_ptr() + slot * self.item, self.slots * self.item, nv.data_ptr(),
                               self.item, self.item, self.rows, DEVICE_TO_DEVICE)
        return self.logits

    def run_past(self, sess, tokens: np.ndarray, codes: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """A multi-token step over the arena (a prefill into a non-empty cache): outputs come back to the host."""
        io = sess.io_binding()
        io.bind_cpu_input(self.model.tokens_name, np.ascontiguousarray(tokens))
        io.bind_cpu_input(self.model.codes_name, np.ascontiguousarray(codes))
        for (past_name, _), kv in zip(self.model.pairs, self.kv):
            io.bind_ortvalue_input(past_name, kv)
        for n in names:
            io.bind_output(n, "cpu")
        sess.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()

    def store(self, slots: np.ndarray, new: list[np.ndarray]) -> None:
        """Host new keys/values of a prefill (one per pair, T on the slot axis) -> device kv at `slots`."""
        for kv, arr in zip(self.kv, new):
            arr = np.ascontiguousarray(arr, np.float32)
            T = arr.shape[self.model.slot_axis]
            for first, j, n in _runs(np.asarray(slots)):
                self.copier.copy2d(kv.data_ptr() + first * self.item, self.slots * self.item,
                                   arr.ctypes.data + j * self.item, T * self.item, n * self.item, self.rows,
                                   HOST_TO_DEVICE)
        self.written = True

    def host_kv(self) -> np.ndarray:
        """The arena copied to the host, (n_pairs, *past shape): for tests and debugging."""
        return np.stack([kv.numpy() for kv in self.kv])


def _bind_host(bind, name: str, arr: np.ndarray) -> None:
    assert arr.flags.c_contiguous, name
    bind(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
