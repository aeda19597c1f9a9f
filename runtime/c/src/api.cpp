// The C API (include/hiergen.h): argument checks, status codes, the last error per thread. No exception
// crosses this boundary; on failure every out pointer is NULL.
#include <onnxruntime_cxx_api.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "internal.hpp"
#include "testing.h"

using hiergen::Error;

struct hiergen_model {
    hiergen::Engine *engine;
};

struct hiergen_params {
    int32_t frames = 33;
    uint64_t seed = 0;
    bool has_temperature = false, has_top_k = false, has_top_p = false;
    double temperature = 1.0, top_p = 1.0;
    int32_t top_k = 0;
    bool strict = false;
    hiergen_progress_fn progress = nullptr;
    void *user_data = nullptr;
    bool has_init = false, has_keyframes = false;
    hiergen::UserFrames init, keyframes;
};

namespace {

thread_local std::string last_error;

hiergen_status fail(hiergen_status s, const std::string &msg) {
    last_error = msg;
    return s;
}

// Runs f, turning every exception into a status and this thread's last error.
template <class F>
hiergen_status guard(F &&f) {
    try {
        f();
        last_error.clear();
        return HIERGEN_OK;
    } catch (const Error &e) {
        return fail(e.status, e.what());
    } catch (const Ort::Exception &e) {
        return fail(HIERGEN_ERR_RUNTIME, std::string("ONNX Runtime: ") + e.what());
    } catch (const std::bad_alloc &) {
        return fail(HIERGEN_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        return fail(HIERGEN_ERR_RUNTIME, e.what());
    } catch (...) {
        return fail(HIERGEN_ERR_RUNTIME, "unknown error");
    }
}

hiergen_status null_arg(const char *what) {
    return fail(HIERGEN_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

hiergen_status set_frames(hiergen::UserFrames &dst, bool &has, const uint8_t *rgb, int32_t n, int32_t w, int32_t h,
                          const char *what) {
    if (!rgb) {
        has = false;
        dst = hiergen::UserFrames();
        return HIERGEN_OK;
    }
    if (n < 1 || w < 1 || h < 1 || w > 16384 || h > 16384 || n > 1024)
        return fail(HIERGEN_ERR_IMAGE, std::string(what) + ": expected width, height >= 1 and a count >= 1, got " +
                                           std::to_string(n) + " x " + std::to_string(w) + "x" + std::to_string(h));
    return guard([&] {
        hiergen::UserFrames u;
        u.rgb.assign(rgb, rgb + size_t(n) * size_t(w) * size_t(h) * 3);
        u.n = n;
        u.width = w;
        u.height = h;
        dst = std::move(u);
        has = true;
    });
}

}  // namespace

extern "C" {

const char *hiergen_version(void) { return "0.1.0"; }

const char *hiergen_status_name(hiergen_status s) {
    switch (s) {
    case HIERGEN_OK: return "HIERGEN_OK";
    case HIERGEN_ERR_INVALID_ARGUMENT: return "HIERGEN_ERR_INVALID_ARGUMENT";
    case HIERGEN_ERR_PACKAGE: return "HIERGEN_ERR_PACKAGE";
    case HIERGEN_ERR_PROMPT: return "HIERGEN_ERR_PROMPT";
    case HIERGEN_ERR_IMAGE: return "HIERGEN_ERR_IMAGE";
    case HIERGEN_ERR_BACKEND: return "HIERGEN_ERR_BACKEND";
    case HIERGEN_ERR_RUNTIME: return "HIERGEN_ERR_RUNTIME";
    case HIERGEN_ERR_CANCELLED: return "HIERGEN_ERR_CANCELLED";
    case HIERGEN_ERR_OUT_OF_MEMORY: return "HIERGEN_ERR_OUT_OF_MEMORY";
    }
    return "HIERGEN_ERR_UNKNOWN";
}

const char *hiergen_last_error(void) { return last_error.c_str(); }

hiergen_status hiergen_model_load(const char *package_dir, const char *backend, int32_t threads, hiergen_model **out) {
    if (out) *out = nullptr;
    if (!out) return null_arg("out");
    if (!package_dir) return null_arg("package_dir");
    if (threads < 0 || threads > 4096)
        return fail(HIERGEN_ERR_INVALID_ARGUMENT, "threads must be 0 (ONNX Runtime's default) or 1 to 4096, got " +
                                                      std::to_string(threads));
    return guard([&] {
        std::unique_ptr<hiergen::Engine, void (*)(hiergen::Engine *)> e(
            hiergen::load_engine(package_dir, backend ? backend : "auto", threads), hiergen::free_engine);
        *out = new hiergen_model{e.get()};
        e.release();
    });
}

void hiergen_model_free(hiergen_model *model) {
    if (!model) return;
    hiergen::free_engine(model->engine);
    delete model;
}

const char *hiergen_model_device(const hiergen_model *model) {
    return model ? hiergen::engine_device(*model->engine) : "";
}

int32_t hiergen_model_frame_counts(const hiergen_model *model, int32_t *counts, int32_t cap) {
    (void)model;
    int32_t n = int32_t(sizeof(hiergen::kFrameCounts) / sizeof(int));
    for (int32_t i = 0; counts && i < n && i < cap; i++) counts[i] = hiergen::kFrameCounts[i];
    return n;
}

int32_t hiergen_model_image_size(const hiergen_model *model) {
    return model ? hiergen::engine_manifest(*model->engine).image_size : 0;
}

hiergen_params *hiergen_default_params(void) { return new (std::nothrow) hiergen_params(); }

void hiergen_params_free(hiergen_params *params) { delete params; }

hiergen_status hiergen_params_set_frames(hiergen_params *p, int32_t frames) {
    if (!p) return null_arg("params");
    p->frames = frames;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_seed(hiergen_params *p, uint64_t seed) {
    if (!p) return null_arg("params");
    p->seed = seed;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_temperature(hiergen_params *p, double t) {
    if (!p) return null_arg("params");
    if (!(std::isfinite(t) && t >= 0))
        return fail(HIERGEN_ERR_INVALID_ARGUMENT, "temperature must be a number >= 0 (0 = greedy), got " + std::to_string(t));
    p->temperature = t;
    p->has_temperature = true;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_top_k(hiergen_params *p, int32_t k) {
    if (!p) return null_arg("params");
    if (k < 0) return fail(HIERGEN_ERR_INVALID_ARGUMENT, "top_k must be >= 0 (0 = no cut, 1 = greedy), got " + std::to_string(k));
    p->top_k = k;
    p->has_top_k = true;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_top_p(hiergen_params *p, double top_p) {
    if (!p) return null_arg("params");
    if (!(std::isfinite(top_p) && top_p > 0 && top_p <= 1))
        return fail(HIERGEN_ERR_INVALID_ARGUMENT, "top_p must be a number in (0, 1] (1 = off), got " + std::to_string(top_p));
    p->top_p = top_p;
    p->has_top_p = true;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_strict(hiergen_params *p, bool strict) {
    if (!p) return null_arg("params");
    p->strict = strict;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_progress(hiergen_params *p, hiergen_progress_fn fn, void *user_data) {
    if (!p) return null_arg("params");
    p->progress = fn;
    p->user_data = user_data;
    return HIERGEN_OK;
}

hiergen_status hiergen_params_set_init_image(hiergen_params *p, const uint8_t *rgb, int32_t width, int32_t height) {
    if (!p) return null_arg("params");
    return set_frames(p->init, p->has_init, rgb, 1, width, height, "init image");
}

hiergen_status hiergen_params_set_keyframes(hiergen_params *p, const uint8_t *rgb, int32_t n, int32_t width,
                                            int32_t height) {
    if (!p) return null_arg("params");
    return set_frames(p->keyframes, p->has_keyframes, rgb, n, width, height, "keyframes");
}

hiergen_status hiergen_generate(const hiergen_model *model, const char *prompt, const hiergen_params *params,
                                hiergen_video **out) {
    if (out) *out = nullptr;
    if (!out) return null_arg("out");
    if (!model) return null_arg("model");
    if (!prompt) return null_arg("prompt");
    if (!params) return null_arg("params");
    return guard([&] {
        const hiergen::Engine &e = *model->engine;
        const hiergen::Plan &plan = hiergen::engine_manifest(e).plan;
        hiergen::GenerateRequest req;
        req.prompt = hiergen::check_prompt(prompt, hiergen::engine_tokenizer(e), params->strict);
        req.frames = params->frames;
        req.sampler.temperature = params->has_temperature ? params->temperature : plan.temperature;
        req.sampler.top_k = params->has_top_k ? params->top_k : plan.top_k;
        req.sampler.top_p = params->has_top_p ? params->top_p : plan.top_p;
        req.sampler.seed = params->seed;
        req.init = params->has_init ? &params->init : nullptr;
        req.keyframes = params->has_keyframes ? &params->keyframes : nullptr;
        req.progress = params->progress;
        req.user_data = params->user_data;
        hiergen::Video v = hiergen::run_generate(e, req);
        std::unique_ptr<hiergen_video, void (*)(hiergen_video *)> video(
            static_cast<hiergen_video *>(std::calloc(1, sizeof(hiergen_video))), hiergen_video_free);
        if (!video) throw std::bad_alloc();
        video->rgb = static_cast<uint8_t *>(std::malloc(v.rgb.size()));
        video->tokens = static_cast<int64_t *>(std::malloc(v.tokens.size() * sizeof(int64_t)));
        if (!video->rgb || !video->tokens) throw std::bad_alloc();
        std::memcpy(video->rgb, v.rgb.data(), v.rgb.size());
        std::memcpy(video->tokens, v.tokens.data(), v.tokens.size() * sizeof(int64_t));
        video->n_frames = v.n_frames;
        video->height = v.height;
        video->width = v.width;
        video->fps = v.fps;
        video->grid = v.grid;
        *out = video.release();
    });
}

void hiergen_video_free(hiergen_video *video) {
    if (!video) return;
    std::free(video->rgb);
    std::free(video->tokens);
    std::free(video);
}

// Test hooks (not part of the API; declared in src/testing.h): the sampler and text front end on their own.
HIERGEN_API double hiergen_test_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return hiergen::uniform(seed, stream, counter);
}

HIERGEN_API int64_t hiergen_test_sample(const float *logits, int32_t V, double u, double temperature, int32_t top_k,
                                        double top_p) {
    hiergen::SamplerOptions o;
    o.temperature = temperature;
    o.top_k = top_k;
    o.top_p = top_p;
    hiergen::SampleScratch w;
    return hiergen::sample_row(logits, V, u, o, w);
}

// The keyframe rate the model's plan gives a prompt, or -1 with the last error set.
HIERGEN_API int32_t hiergen_test_keyframe_rate(const hiergen_model *model, const char *prompt) {
    if (!model || !prompt) return -1;
    return hiergen::engine_manifest(*model->engine).plan.rate_for(hiergen::caption_speed(prompt));
}

// The token ids of [rate] words [boi] (n = text_len written into ids), or -1 with the last error set.
HIERGEN_API int32_t hiergen_test_encode(const hiergen_model *model, const char *prompt, int32_t rate, bool drop_text,
                                        int64_t *ids, int32_t cap) {
    if (!model || !prompt || (!ids && cap > 0)) return -1;
    int32_t n = -1;
    hiergen_status s = guard([&] {
        auto v = hiergen::engine_tokenizer(*model->engine).encode(prompt, rate, drop_text);
        n = int32_t(v.size());
        for (int32_t i = 0; i < n && i < cap; i++) ids[i] = v[i];
    });
    return s == HIERGEN_OK ? n : -1;
}

}  // extern "C"
