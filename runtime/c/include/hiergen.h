/* hiergen.h: libhiergen, the hiergen runtime as a C library.
 *
 * Text to video with a hierarchical (keyframes, then interpolation) transformer, over a model package
 * exported by `hiergen export` (models/default: ONNX fragments + manifest.json), run by ONNX Runtime.
 * The same prompt, seed and package give the same tokens, so the same frames, as the Python runtime
 * (`hiergen generate`, hiergen.Pipeline).
 *
 * Usage sketch:
 *
 *     hiergen_model *model = NULL;
 *     if (hiergen_model_load("models/default", "auto", 0, &model) != HIERGEN_OK) {
 *         fprintf(stderr, "%s\n", hiergen_last_error());
 *         return 1;
 *     }
 *     hiergen_params *params = hiergen_default_params();        // frames 33, seed 0, the plan's sampler
 *     hiergen_params_set_frames(params, 33);
 *     hiergen_params_set_seed(params, 7);
 *     hiergen_video *video = NULL;
 *     if (hiergen_generate(model, "a small red circle moves left slowly", params, &video) == HIERGEN_OK) {
 *         // video->rgb: n_frames x height x width x 3 bytes, RGB, row-major; played at video->fps
 *         hiergen_video_free(video);
 *     } else {
 *         fprintf(stderr, "%s\n", hiergen_last_error());
 *     }
 *     hiergen_params_free(params);
 *     hiergen_model_free(model);
 *
 * Conventions
 * - Every call that can fail returns a hiergen_status; HIERGEN_OK is 0. On failure, hiergen_last_error()
 *   gives a message for the calling thread (what went wrong and how to fix it) and every output pointer
 *   is set to NULL: there is never a partial result to free.
 * - Ownership: an object returned through an out pointer belongs to the caller, who frees it with the
 *   matching *_free function (each accepts NULL). Strings and buffers passed in are read during the call
 *   only (the params copy the init image / keyframes they are given).
 * - Threads: the library has no global mutable state. A hiergen_model may be shared by threads: any
 *   number of threads may call hiergen_generate on one model at once (each call makes its own KV-cache
 *   arenas). A hiergen_params or hiergen_video must not be used by two threads at once. hiergen_last_error
 *   is per thread. The progress callback runs on the thread that called hiergen_generate.
 */
#ifndef HIERGEN_H
#define HIERGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(HIERGEN_SHARED)
#  ifdef HIERGEN_BUILD
#    define HIERGEN_API __declspec(dllexport)
#  else
#    define HIERGEN_API __declspec(dllimport)
#  endif
#elif defined(HIERGEN_BUILD)
#  define HIERGEN_API __attribute__((visibility("default")))
#else
#  define HIERGEN_API
#endif

#define HIERGEN_VERSION_MAJOR 0
#define HIERGEN_VERSION_MINOR 1
#define HIERGEN_VERSION_PATCH 0

typedef enum hiergen_status {
    HIERGEN_OK = 0,
    HIERGEN_ERR_INVALID_ARGUMENT = 1,  /* a NULL pointer, or a value out of range (frames, seed, top_k, ...) */
    HIERGEN_ERR_PACKAGE = 2,           /* missing, corrupted or unsupported model package */
    HIERGEN_ERR_PROMPT = 3,            /* empty or too long prompt; unknown words with strict set */
    HIERGEN_ERR_IMAGE = 4,             /* init image / keyframes of the wrong size or count */
    HIERGEN_ERR_BACKEND = 5,           /* an execution provider this ONNX Runtime does not have */
    HIERGEN_ERR_RUNTIME = 6,           /* ONNX Runtime failed while running a fragment */
    HIERGEN_ERR_CANCELLED = 7,         /* the progress callback returned false */
    HIERGEN_ERR_OUT_OF_MEMORY = 8
} hiergen_status;

typedef struct hiergen_model hiergen_model;    /* a loaded package: sessions and plan; read-only once loaded */
typedef struct hiergen_params hiergen_params;  /* per-generation settings */

/* A generated video. All arrays are owned by the video; free it with hiergen_video_free. */
typedef struct hiergen_video {
    int32_t n_frames;
    int32_t height;
    int32_t width;          /* pixels; 3 channels */
    double fps;             /* playback rate of the frames */
    uint8_t *rgb;           /* n_frames * height * width * 3 bytes, RGB */
    int32_t grid;           /* tokens per side of a frame */
    int64_t *tokens;        /* n_frames * grid * grid image tokens (what the VQ-VAE decoder turned into rgb) */
} hiergen_video;

/* Progress: called after every generated token with the stage ("frame 1", "keyframes", "round 1", ...),
 * the tokens done and the stage's total. Return true to go on, false to cancel: hiergen_generate then
 * returns HIERGEN_ERR_CANCELLED and no video. */
typedef bool (*hiergen_progress_fn)(const char *stage, int32_t done, int32_t total, void *user_data);

/* Version and status names. */
HIERGEN_API const char *hiergen_version(void);                   /* "0.1.0"; static string */
HIERGEN_API const char *hiergen_status_name(hiergen_status s);   /* "HIERGEN_OK", ...; static string */

/* The message of the last failed call on this thread ("" if none). Valid until the thread's next call
 * into the library; copy it to keep it. */
HIERGEN_API const char *hiergen_last_error(void);

/* Load a model package folder: format version and every file's SHA-256 are checked, as in Python.
 * backend: "auto" (or NULL: TensorRT, CUDA, then CPU, the first this ONNX Runtime has), "tensorrt",
 * "cuda" or "cpu". threads: intra-op threads of each session, 0 for ONNX Runtime's default (all cores). */
HIERGEN_API hiergen_status hiergen_model_load(const char *package_dir, const char *backend, int32_t threads,
                                              hiergen_model **out);
HIERGEN_API void hiergen_model_free(hiergen_model *model);

/* The execution provider the transformer fragments run on, e.g. "CPUExecutionProvider" (static string). */
HIERGEN_API const char *hiergen_model_device(const hiergen_model *model);
/* The frame counts the model's plan can make, ascending (5, 9, 17, 33): writes up to cap of them into
 * counts (may be NULL) and returns how many there are. */
HIERGEN_API int32_t hiergen_model_frame_counts(const hiergen_model *model, int32_t *counts, int32_t cap);
/* Side in pixels of the square RGB frames the model makes and takes (init image, keyframes). */
HIERGEN_API int32_t hiergen_model_image_size(const hiergen_model *model);

/* Parameters. hiergen_default_params returns a new object (NULL only when out of memory): frames 33,
 * seed 0, temperature / top_k / top_p from the package's plan, strict off, no user frames, no callback. */
HIERGEN_API hiergen_params *hiergen_default_params(void);
HIERGEN_API void hiergen_params_free(hiergen_params *params);
HIERGEN_API hiergen_status hiergen_params_set_frames(hiergen_params *p, int32_t frames);   /* checked by generate */
HIERGEN_API hiergen_status hiergen_params_set_seed(hiergen_params *p, uint64_t seed);
HIERGEN_API hiergen_status hiergen_params_set_temperature(hiergen_params *p, double t);  /* >= 0; 0 = greedy */
HIERGEN_API hiergen_status hiergen_params_set_top_k(hiergen_params *p, int32_t k);       /* >= 0; 0 = off, 1 = greedy */
HIERGEN_API hiergen_status hiergen_params_set_top_p(hiergen_params *p, double top_p);   /* (0, 1]; 1 = off */
HIERGEN_API hiergen_status hiergen_params_set_strict(hiergen_params *p, bool strict);   /* refuse unknown words */
HIERGEN_API hiergen_status hiergen_params_set_progress(hiergen_params *p, hiergen_progress_fn fn, void *user_data);
/* The user's frame 1 (the text-to-image stage is skipped): width x height x 3 bytes of RGB, copied.
 * generate requires width = height = hiergen_model_image_size. NULL rgb clears it. */
HIERGEN_API hiergen_status hiergen_params_set_init_image(hiergen_params *p, const uint8_t *rgb, int32_t width,
                                                         int32_t height);
/* n user keyframes (5, 9, 17 or 33, at most the frame count), n x height x width x 3 bytes, copied: they
 * become evenly spaced frames of the video, first and last included. NULL rgb clears them. */
HIERGEN_API hiergen_status hiergen_params_set_keyframes(hiergen_params *p, const uint8_t *rgb, int32_t n,
                                                        int32_t width, int32_t height);

/* Generate a video of prompt. Everything is checked before any work; on failure *out is NULL. */
HIERGEN_API hiergen_status hiergen_generate(const hiergen_model *model, const char *prompt,
                                            const hiergen_params *params, hiergen_video **out);
HIERGEN_API void hiergen_video_free(hiergen_video *video);

#ifdef __cplusplus
}
#endif

#endif /* HIERGEN_H */
