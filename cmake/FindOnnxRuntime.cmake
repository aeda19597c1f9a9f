# Finds ONNX Runtime in a release layout: ONNXRUNTIME_ROOT/include (or include/onnxruntime, as JetPack and
# Debian lay it out) and ONNXRUNTIME_ROOT/lib. Defines OnnxRuntime::OnnxRuntime, OnnxRuntime_LIBRARY and
# OnnxRuntime_LIBRARY_DIR.
find_path(OnnxRuntime_INCLUDE_DIR onnxruntime_cxx_api.h
          HINTS ${ONNXRUNTIME_ROOT} ENV ONNXRUNTIME_ROOT
          PATH_SUFFIXES include include/onnxruntime include/onnxruntime/core/session)
find_library(OnnxRuntime_LIBRARY NAMES onnxruntime
             HINTS ${ONNXRUNTIME_ROOT} ENV ONNXRUNTIME_ROOT PATH_SUFFIXES lib lib64)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OnnxRuntime
  REQUIRED_VARS OnnxRuntime_LIBRARY OnnxRuntime_INCLUDE_DIR
  FAIL_MESSAGE "ONNX Runtime not found: pass -DONNXRUNTIME_ROOT=<dir with include/ and lib/> (a release tarball, \
JetPack's ONNX Runtime, or scripts/get-onnxruntime.sh's build/onnxruntime)")
if(OnnxRuntime_FOUND AND NOT TARGET OnnxRuntime::OnnxRuntime)
  get_filename_component(OnnxRuntime_LIBRARY_DIR "${OnnxRuntime_LIBRARY}" DIRECTORY)
  get_filename_component(OnnxRuntime_LIBRARY_DIR "${OnnxRuntime_LIBRARY_DIR}" ABSOLUTE)
  add_library(OnnxRuntime::OnnxRuntime UNKNOWN IMPORTED)
  set_target_properties(OnnxRuntime::OnnxRuntime PROPERTIES IMPORTED_LOCATION "${OnnxRuntime_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${OnnxRuntime_INCLUDE_DIR}")
endif()
