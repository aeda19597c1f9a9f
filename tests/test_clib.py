"""libhiergen, the C library (runtime/c): built with CMake here, driven through ctypes and its C programs.

Parity with the Python runtime (the same tokens, so the same frames), the sampler and text front end on
their own, the error paths of the C API (hiergen-check, also under AddressSanitizer +
UndefinedBehaviorSanitizer), the example program, and the installed package. The build is the same as
`make clib` (hiergen/tools/clib.py); tests skip only where cmake or a C++ compiler is absent.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

from hiergen.tools.clib import BUILD, ROOT, ClibError, CModel, build, missing_tools, open_library

PACKAGE = ROOT / "models" / "default"
PROMPTS = ["a small red circle moves left slowly", "a large blue square moves up quickly",
           "a small green triangle bounces slowly", "a large white circle stays still",
           "a small purple square moves right then down quickly"]

pytestmark = pytest.mark.skipif(bool(missing_tools()),
                                reason=f"libhiergen needs {', '.join(missing_tools())} to build (apt-get install cmake g++)")


@pytest.fixture(scope="module")
def lib():
    return open_library(build())


@pytest.fixture(scope="module")
def cmodel(lib):
    m = CModel.load(PACKAGE, lib=lib)
    yield m
    m.close()


@pytest.fixture(scope="module")
def pipe():
    from hiergen import Pipeline
    return Pipeline.load(PACKAGE)


# ------------------------------------------------------------------ parity with the Python runtime

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sampled", "greedy"])
def test_same_tokens_and_frames_as_python(cmodel, pipe, mode):
    """5 prompts x 2 seeds x every frame count the plan allows: identical tokens and frames."""
    kw = {"top_k": 1} if mode == "greedy" else {}
    compared = 0
    for prompt in PROMPTS:
        for seed in (0, 1):
            for frames in (5, 9, 17, 33):
                c = cmodel.generate(prompt, frames=frames, seed=seed, **kw)
                v = pipe.generate(prompt, frames=frames, seed=seed, **kw)
                diff = int((c.tokens != v.tokens).sum())
                print(f"{mode} {prompt!r} seed {seed} {frames} frames: {diff} of {v.tokens.size} tokens differ, "
                      f"max |frame diff| {int(np.abs(c.frames.astype(int) - v.frames).max())}")
                assert diff == 0 and c.tokens.shape == v.tokens.shape
                assert np.array_equal(c.frames, v.frames) and c.fps == v.fps
                compared += 1
    assert compared == 40


def test_same_tokens_with_temperature_top_p_and_no_top_k(cmodel, pipe):
    kw = dict(temperature=0.7, top_k=0, top_p=0.9)
    c = cmodel.generate(PROMPTS[1], frames=17, seed=5, **kw)
    v = pipe.generate(PROMPTS[1], frames=17, seed=5, **kw)
    assert np.array_equal(c.tokens, v.tokens) and np.array_equal(c.frames, v.frames)


def test_same_tokens_from_an_init_image_and_keyframes(cmodel, pipe):
    first = pipe.generate(PROMPTS[0], frames=5, seed=2)
    for kw in (dict(init_image=first.frames[0]), dict(keyframes=first.frames)):
        c = cmodel.generate(PROMPTS[2], frames=17, seed=4, **kw)
        v = pipe.generate(PROMPTS[2], frames=17, seed=4, **kw)
        assert np.array_equal(c.tokens, v.tokens) and np.array_equal(c.frames, v.frames) and c.fps == v.fps


def test_one_model_shared_by_threads(cmodel):
    alone = [cmodel.generate(p, frames=9, seed=1).tokens for p in PROMPTS[:2]]
    got = [None, None]

    def run(i):
        got[i] = cmodel.generate(PROMPTS[i], frames=9, seed=1).tokens
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(a, b) for a, b in zip(alone, got))


# ------------------------------------------------------------------ sampler and text front end

def test_uniform_matches_the_python_generator(lib):
    from hiergen.runtime.sampler import uniform
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2 ** 64 - 1, *rng.integers(0, 2 ** 63, 20).tolist()]
    for seed in seeds:
        streams = rng.integers(0, 1 << 20, 8)
        for counter in (0, 11, 330, int(rng.integers(0, 2 ** 40))):
            want = uniform(seed, streams, counter)
            got = [lib.hiergen_test_uniform(seed, int(s), counter) for s in streams]
            assert got == want.tolist()


def test_sample_matches_the_python_sampler_bit_for_bit(lib):
    from hiergen.runtime.sampler import SamplerOptions, sample
    rng = np.random.default_rng(1)
    settings = [(1.0, 12, 1.0), (1.0, 1, 1.0), (0.0, 12, 1.0), (0.7, 0, 0.9), (1.3, 5, 0.5), (1.0, 0, 1.0),
                (2.0, 200, 0.95), (0.5, 3, 1.0)]
    n = 0
    for temperature, top_k, top_p in settings:
        opts = SamplerOptions(temperature=temperature, top_k=top_k, top_p=top_p)
        for trial in range(40):
            V = 512
            logits = (rng.normal(size=(4, V)) * rng.uniform(0.5, 8)).astype(np.float32)
            if trial % 3 == 0:                          # ties, also at the top-k edge
                logits = np.round(logits).astype(np.float32)
            u = rng.uniform(size=4)
            want = sample(logits, u, opts)
            for r in range(4):
                row = np.ascontiguousarray(logits[r])
                got = lib.hiergen_test_sample(row.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), V, float(u[r]),
                                              temperature, top_k, top_p)
                assert got == want[r], (temperature, top_k, top_p, trial, r)
                n += 1
    assert n == len(settings) * 160


def test_keyframe_rate_and_text_ids_match_python(cmodel, pipe):
    from hiergen.captions import all_captions
    from hiergen.runtime.pipeline import keyframe_rate
    lib, tok = cmodel.lib, pipe.tokenizer
    prompts = [c.text for c in all_captions()]
    prompts += ["a red circle moves left quickly", "a small red circle moves left then right quickly",
                "A Small Red Circle Moves Left, Quickly", "small red circle moves up quickly", "a small red circle",
                "a small red circle stays still quickly", "a small red circle bounces", "quickly", "a <pad> x y z",
                "a small red dragon moves left quickly", "a\tlarge  blue square\nbounces slowly"]
    ids = (ctypes.c_int64 * 16)()
    for p in prompts:
        assert lib.hiergen_test_keyframe_rate(cmodel.handle, p.encode()) == keyframe_rate(p, pipe.plan), p
        for rate in (1, 4, 16):
            for drop in (False, True):
                n = lib.hiergen_test_encode(cmodel.handle, p.encode(), rate, drop, ids, 16)
                assert list(ids[:n]) == tok.encode(p, rate, drop_text=drop), p


# ------------------------------------------------------------------ errors

def bad_packages(tmp_path):
    """(missing dir, corrupted package, wrong format version), each but the changed file linked to the shipped one."""
    corrupt, version = tmp_path / "corrupt", tmp_path / "version"
    for d in (corrupt, version):
        d.mkdir()
        for f in PACKAGE.iterdir():
            (d / f.name).symlink_to(f)
    (corrupt / "t2i_decode.onnx").unlink()
    data = bytearray((PACKAGE / "t2i_decode.onnx").read_bytes())
    data[100] ^= 1
    (corrupt / "t2i_decode.onnx").write_bytes(bytes(data))
    m = json.loads((PACKAGE / "manifest.json").read_text())
    m["format_version"] = 4
    (version / "manifest.json").unlink()
    (version / "manifest.json").write_text(json.dumps(m))
    return tmp_path / "missing", corrupt, version


def test_package_errors_read_like_pythons(lib, tmp_path):
    from hiergen.runtime.package import PackageError, open_package
    for path in bad_packages(tmp_path):
        with pytest.raises(PackageError) as py:
            open_package(path)
        with pytest.raises(ClibError) as c:
            CModel.load(path, lib=lib)
        assert c.value.status == "HIERGEN_ERR_PACKAGE" and c.value.message == str(py.value)


def test_reduced_precision_packages_are_refused(lib, tmp_path):
    pkg = tmp_path / "fp16"
    pkg.mkdir()
    for f in PACKAGE.iterdir():
        (pkg / f.name).symlink_to(f)
    m = json.loads((PACKAGE / "manifest.json").read_text())
    m["fragments"]["t2i_decode"]["precision"] = "fp16"
    (pkg / "manifest.json").unlink()
    (pkg / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ClibError, match="fp32 packages only"):
        CModel.load(pkg, lib=lib)


def test_bad_generation_input_gets_a_status_and_no_video(cmodel):
    cases = [(dict(prompt=""), "HIERGEN_ERR_PROMPT", "empty prompt"),
             (dict(prompt="a small red dragon moves left slowly", strict=True), "HIERGEN_ERR_PROMPT", "'dragon'"),
             (dict(frames=7), "HIERGEN_ERR_INVALID_ARGUMENT", "cannot make 7 frames"),
             (dict(init_image=np.zeros((32, 48, 3), np.uint8)), "HIERGEN_ERR_IMAGE", "48x32"),
             (dict(keyframes=np.zeros((3, 64, 64, 3), np.uint8)), "HIERGEN_ERR_IMAGE", "3 keyframes"),
             (dict(top_p=0.0), "HIERGEN_ERR_INVALID_ARGUMENT", "top_p"),
             (dict(progress=lambda stage, done, total: done < 5), "HIERGEN_ERR_CANCELLED", "cancelled")]
    for kw, status, part in cases:
        kw = {"prompt": PROMPTS[0], "frames": 5, **kw}
        with pytest.raises(ClibError) as e:
            cmodel.generate(kw.pop("prompt"), **kw)
        assert e.value.status == status and part in e.value.message, (kw, e.value)


def run_check(build_dir, tmp_path, env=None):
    missing, corrupt, version = bad_packages(tmp_path)
    r = subprocess.run([str(build_dir / "hiergen-check"), str(PACKAGE), str(missing), str(corrupt), str(version)],
                       capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    print(r.stdout, r.stderr[-4000:])
    return r


def test_c_program_error_paths_and_threads(lib, tmp_path):
    r = run_check(BUILD[False], tmp_path)
    assert r.returncode == 0 and "0 failed" in r.stdout, r.stderr


@pytest.mark.slow
def test_sanitizers_find_nothing(tmp_path):
    """The C program on the AddressSanitizer + UndefinedBehaviorSanitizer build: no finding, no leak."""
    build(asan=True)
    r = run_check(BUILD[True], tmp_path, env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23",
                                              "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    assert r.returncode == 0 and "0 failed" in r.stdout
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr


# ------------------------------------------------------------------ example program and install

def test_example_program_writes_a_readable_33_frame_video(lib, tmp_path):
    exe = BUILD[False] / "hiergen-gen"
    if not exe.is_file():
        pytest.skip("hiergen-gen was not built: FFmpeg's development libraries are absent "
                    "(apt-get install libavformat-dev libavcodec-dev libswscale-dev libavutil-dev)")
    av = pytest.importorskip("av")
    out = tmp_path / "out.mp4"
    r = subprocess.run([str(exe), *PROMPTS[0].split(), "-o", str(out), "--frames", "33", "--seed", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as f:
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == 33 and frames[0].shape == (256, 256, 3)
    bad = subprocess.run([str(exe), "", "-o", str(tmp_path / "x.mp4")], capture_output=True, text=True)
    assert bad.returncode == 1 and "empty prompt" in bad.stderr and not (tmp_path / "x.mp4").exists()


def test_install_gives_header_libraries_cmake_package_and_pkg_config(lib, tmp_path):
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", str(BUILD[False]), "--prefix", str(prefix)], check=True,
                   capture_output=True)
    libdir = next(p for p in (prefix / "lib", prefix / "lib64", *prefix.glob("lib/*-linux-gnu")) if
                  (p / "libhiergen.so").exists())
    for f in ("include/hiergen.h",):
        assert (prefix / f).is_file()
    assert (libdir / "libhiergen.a").is_file() and (libdir / "cmake" / "hiergen" / "hiergenConfig.cmake").is_file()
    pc = libdir / "pkgconfig" / "hiergen.pc"
    assert pc.is_file()
    if shutil.which("pkg-config") and shutil.which("cc"):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", str(pc)], capture_output=True, text=True,
                               check=True).stdout.split()
        src = tmp_path / "use.c"
        src.write_text('#include <hiergen.h>\n#include <stdio.h>\nint main(void) { hiergen_model *m = NULL;\n'
                       '  hiergen_status s = hiergen_model_load("/nonexistent", NULL, 0, &m);\n'
                       '  printf("%s %s\\n", hiergen_version(), hiergen_status_name(s)); return m != NULL; }\n')
        subprocess.run(["cc", str(src), "-o", str(tmp_path / "use"), *flags, f"-Wl,-rpath,{libdir}"], check=True)
        out = subprocess.run([str(tmp_path / "use")], capture_output=True, text=True, check=True).stdout
        assert out.split() == ["0.1.0", "HIERGEN_ERR_PACKAGE"]
        # find_package(hiergen) from a CMake project, against the shared and the static library
        proj = tmp_path / "proj"
        proj.mkdir()
        (proj / "use.c").write_text(src.read_text())
        (proj / "CMakeLists.txt").write_text(
            "cmake_minimum_required(VERSION 3.16)\nproject(use C CXX)\nfind_package(hiergen REQUIRED)\n"
            "add_executable(use use.c)\ntarget_link_libraries(use PRIVATE hiergen::hiergen)\n"
            "add_executable(use_static use.c)\ntarget_link_libraries(use_static PRIVATE hiergen::hiergen_static)\n"
            f"set_target_properties(use PROPERTIES BUILD_RPATH {libdir})\n")
        subprocess.run(["cmake", "-S", str(proj), "-B", str(proj / "b"), f"-DCMAKE_PREFIX_PATH={prefix}"],
                       check=True, capture_output=True)
        subprocess.run(["cmake", "--build", str(proj / "b")], check=True, capture_output=True)
        for exe in ("use", "use_static"):
            out = subprocess.run([str(proj / "b" / exe)], capture_output=True, text=True, check=True).stdout
            assert out.split() == ["0.1.0", "HIERGEN_ERR_PACKAGE"]
