"""What this machine can run: versions, ONNX Runtime providers, CUDA and TensorRT (torch-free)."""
from __future__ import annotations

import ctypes.util
import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpus() -> list[str]:
    """GPU names from nvidia-smi, without loading any CUDA library into this process."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []


def collect() -> dict:
    import cv2
    import numpy as np
    import onnxruntime as ort

    from hiergen import __version__
    from hiergen.video import mp4_encoder

    providers = ort.get_available_providers()
    gpus = _gpus()
    trt_py = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13")
    return {
        "hiergen": __version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "pyav": _version("av"),
        "mp4_encoder": mp4_encoder(),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": providers,
        # Reported from package metadata only: the runtime never imports torch.
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "gpus": gpus,
        "libcuda": ctypes.util.find_library("cuda") is not None,
        "cuda_usable": bool(gpus) and "CUDAExecutionProvider" in providers,
        "tensorrt_python": trt_py,
        "tensorrt_usable": bool(gpus) and (trt_py is not None or "TensorrtExecutionProvider" in providers),
    }


def format_info(info: dict) -> str:
    def yes(b: bool) -> str:
        return "yes" if b else "no"

    cuda_why = ("" if info["cuda_usable"] else
                " (no NVIDIA GPU found)" if not info["gpus"] else
                " (GPU found, but onnxruntime has no CUDAExecutionProvider: pip install 'hiergen[gpu]')")
    trt_why = ("" if info["tensorrt_usable"] else
               " (no NVIDIA GPU found)" if not info["gpus"] else
               " (install TensorRT's Python package from NVIDIA's index)")
    lines = [
        f"hiergen      {info['hiergen']}",
        f"python       {info['python']} ({info['platform']})",
        f"numpy        {info['numpy']}",
        f"opencv       {info['opencv']}",
        f"pyav         {info['pyav'] or 'not installed'}  MP4 encoder: {info['mp4_encoder']}"
        + ("" if info["mp4_encoder"] != "mp4v" else " (browsers will not play it: pip install av)"),
        f"onnxruntime  {info['onnxruntime']}  providers: {', '.join(info['onnxruntime_providers'])}",
        f"onnx         {info['onnx'] or 'not installed (needed for export: hiergen[train])'}",
        f"torch        {info['torch'] or 'not installed (needed for training: hiergen[train])'}",
        f"tensorrt     {info['tensorrt_python'] or 'not installed'}",
        f"GPUs         {', '.join(info['gpus']) or 'none'}",
        f"CUDA usable: {yes(info['cuda_usable'])}{cuda_why}",
        f"TensorRT usable: {yes(info['tensorrt_usable'])}{trt_why}",
    ]
    return "\n".join(lines)
