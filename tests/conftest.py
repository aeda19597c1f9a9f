import os
import shutil

import pytest

# Tests run tiny models whose ops are far too small to share between threads:
# one thread each avoids OpenMP spin-waiting, which on a 2-core machine with
# anything else running made decode steps 60x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Skip device-marked tests where the device is absent (they still run where it is)."""
    has_gpu = shutil.which("nvidia-smi") is not None
    try:
        import importlib.util
        has_trt = importlib.util.find_spec("tensorrt") is not None
    except Exception:  # noqa: BLE001
        has_trt = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(pytest.mark.skip(reason="needs the TensorRT Python package"))
