// libhiergen's internals: the package reader, text front end, sampler and engine (C++17).
// Reading order follows a generation: package.cpp (manifest, hashes) -> text.cpp (prompt checks, caption
// grammar, tokenizer) -> sampler.cpp (counter-based generator, sampling) -> engine.cpp (sessions, KV-cache
// arenas, the keyframe-then-interpolate loop) -> api.cpp (the C API: status codes, last error per thread).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "hiergen.h"

namespace hiergen {

// Every failure inside the library is an Error carrying the status the C API returns.
struct Error : std::runtime_error {
    hiergen_status status;
    Error(hiergen_status s, const std::string &msg) : std::runtime_error(msg), status(s) {}
};

// ---- package.cpp: the model package's manifest (runtime/manifest.py, runtime/package.py) ----

constexpr const char *kFormat = "hiergen-package";
constexpr int kFormatVersion = 5;
// The plan's frame counts (runtime/plan.py FRAME_COUNTS): 5 keyframes, then each interpolation round doubles.
constexpr int kFrameCounts[] = {5, 9, 17, 33};

struct TensorSpec {
    std::string name, dtype;
    std::vector<int64_t> shape;        // -1: a symbolic axis
    std::vector<std::string> axes;     // the symbolic axis names ("" where fixed)
};

struct FragmentSpec {
    std::string name, file, sha256, precision, prefill, decode;
    std::vector<TensorSpec> inputs, outputs;
    bool has_kv = false;
    std::vector<std::pair<std::string, std::string>> pairs;     // (past input, new output)
    int slot_axis = 2;
    std::vector<std::string> frame_local;
    std::map<std::string, int> window_local;                    // past input -> layer parity
    const TensorSpec *input(const std::string &n) const;
    const TensorSpec *output(const std::string &n) const;
};

struct Plan {
    std::map<std::string, int> keyframe_rate;
    int max_rate_token = 16;
    std::map<std::string, double> guidance;
    double temperature = 1.0;
    int top_k = 0;
    double top_p = 1.0;
    int rate_for(const std::string &speed) const;   // "" = no speed word
};

struct Manifest {
    int text_len = 0, grid = 0, n_frames = 0, image_vocab = 0, window = 0, image_size = 0;
    std::vector<std::string> vocab;
    Plan plan;
    std::string weights_file, weights_sha256;
    std::map<std::string, FragmentSpec> fragments;
    const FragmentSpec &fragment(const std::string &name) const;
};

extern const char *const kFix;
// The manifest of a package whose format version is ours and whose files all match their SHA-256.
Manifest open_package(const std::string &dir);
std::string sha256_file(const std::string &path);   // hex; throws Error(PACKAGE) when unreadable
std::string join_path(const std::string &dir, const std::string &file);

// ---- text.cpp: prompt checks, caption grammar, tokenizer (hiergen/tokenizer.py, hiergen/captions.py) ----

struct Tokenizer {
    std::vector<std::string> vocab;
    std::map<std::string, int64_t> index;
    int max_words = 9;
    explicit Tokenizer(const std::vector<std::string> &vocab, int max_words);
    // [rate] w1 .. w9 [boi]: unknown words -> <unk>; drop_text gives guidance's text-free prefix.
    std::vector<int64_t> encode(const std::string &text, int rate, bool drop_text = false) const;
    std::vector<std::string> unknown_words(const std::string &text) const;
};

std::vector<std::string> split_ws(const std::string &s);     // Python str.split() for ASCII whitespace
std::string lower_ascii(std::string s);
// check_prompt (runtime/pipeline.py): the cleaned prompt, or Error(PROMPT).
std::string check_prompt(const char *prompt, const Tokenizer &tok, bool strict);
// The caption's speed word if the prompt parses as a caption of the grammar (captions.parse), else "".
std::string caption_speed(const std::string &prompt);

// ---- sampler.cpp (runtime/sampler.py, bit for bit) ----

struct SamplerOptions {
    double temperature = 1.0;
    int top_k = 0;
    double top_p = 1.0;
    uint64_t seed = 0;
    bool greedy() const { return top_k == 1 || temperature == 0.0; }
};

uint64_t mix64(uint64_t x);
double uniform(uint64_t seed, uint64_t stream, uint64_t counter);
// One row of logits (V floats) and its uniform draw -> token. work: scratch reused between calls.
struct SampleScratch {
    std::vector<int32_t> order;
    std::vector<double> p, c;
};
int64_t sample_row(const float *logits, int V, double u, const SamplerOptions &o, SampleScratch &work);

// ---- engine.cpp ----

struct UserFrames {
    std::vector<uint8_t> rgb;   // n x h x w x 3
    int n = 0, width = 0, height = 0;
};

struct GenerateRequest {
    std::string prompt;
    int frames = 33;
    SamplerOptions sampler;
    const UserFrames *init = nullptr;        // one frame
    const UserFrames *keyframes = nullptr;
    hiergen_progress_fn progress = nullptr;
    void *user_data = nullptr;
};

struct Video {
    std::vector<int64_t> tokens;     // F x g x g
    std::vector<uint8_t> rgb;        // F x H x W x 3
    int n_frames = 0, height = 0, width = 0, grid = 0;
    double fps = 0;
};

class Engine;
Engine *load_engine(const std::string &dir, const std::string &backend, int threads);
Video run_generate(const Engine &e, const GenerateRequest &req);
const Manifest &engine_manifest(const Engine &e);
const Tokenizer &engine_tokenizer(const Engine &e);
const char *engine_device(const Engine &e);
void free_engine(Engine *e);

}  // namespace hiergen
