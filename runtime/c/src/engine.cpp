// The engine: ONNX Runtime sessions over the package's fragments, one preallocated KV-cache arena per
// generation stage bound with IO binding, and the keyframe-then-interpolate loop of
// runtime/orchestrator.py (the same stages, batches, random streams and counters, so the same tokens).
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <cstring>
#include <future>

#include "internal.hpp"

namespace hiergen {

namespace {

constexpr int kDecodeChunk = 4;         // frames per VQ-VAE decoder run (run_generate)
constexpr int kSingleThreadBelow = 8;   // CPU decode steps of fewer sequences run on one intra-op thread
                                        // (runtime/backend.py SINGLE_THREAD_BELOW, docs/runtime.md)

const char *const kProviders[][2] = {{"tensorrt", "TensorrtExecutionProvider"},
                                     {"cuda", "CUDAExecutionProvider"},
                                     {"cpu", "CPUExecutionProvider"}};

std::vector<std::string> providers_for(const std::string &backend) {
    std::vector<std::string> available = Ort::GetAvailableProviders(), out;
    auto has = [&](const std::string &p) { return std::find(available.begin(), available.end(), p) != available.end(); };
    if (backend == "auto") {
        for (auto &p : kProviders)
            if (has(p[1])) out.push_back(p[1]);
        return out;
    }
    for (auto &p : kProviders) {
        if (backend != p[0]) continue;
        if (!has(p[1])) {
            std::string list;
            for (auto &a : available) list += (list.empty() ? "" : ", ") + a;
            std::string hint = backend == "cuda" ? "use an ONNX Runtime built with CUDA (the GPU release, or JetPack's)"
                             : backend == "tensorrt" ? "use an ONNX Runtime built with TensorRT (JetPack's, or a TensorRT build)"
                             : "use backend auto";
            throw Error(HIERGEN_ERR_BACKEND, "backend '" + backend + "' is not available in this onnxruntime (it has " +
                                                 list + "); " + hint);
        }
        if (backend == "cpu") return {p[1]};
        return {p[1], "CPUExecutionProvider"};
    }
    throw Error(HIERGEN_ERR_BACKEND, "unknown backend '" + backend + "'; choose one of auto, tensorrt, cuda, cpu");
}

// One ONNX Runtime session with the Python runtime's settings (runtime/backend.py session()).
Ort::Session make_session(Ort::Env &env, const std::string &path, const std::vector<std::string> &providers, int threads) {
    Ort::SessionOptions so;
    so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
    if (threads > 0) so.SetIntraOpNumThreads(threads);
    so.SetInterOpNumThreads(1);
    // Denormals flushed to zero (masked scores leave denormal probabilities that ran 6x slower) and pool
    // threads that stop spinning when a run returns: docs/runtime.md, "Denormals" and "Spinning".
    so.AddConfigEntry("session.set_denormal_as_zero", "1");
    so.AddConfigEntry("session.force_spinning_stop", "1");
    const OrtApi &api = Ort::GetApi();
    for (auto &p : providers) {
        if (p == "TensorrtExecutionProvider") {
            OrtTensorRTProviderOptionsV2 *o = nullptr;
            Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&o));
            std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(api.ReleaseTensorRTProviderOptions)> guard(
                o, api.ReleaseTensorRTProviderOptions);
            so.AppendExecutionProvider_TensorRT_V2(*o);
        } else if (p == "CUDAExecutionProvider") {
            OrtCUDAProviderOptionsV2 *o = nullptr;
            Ort::ThrowOnError(api.CreateCUDAProviderOptions(&o));
            std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> guard(
                o, api.ReleaseCUDAProviderOptions);
            so.AppendExecutionProvider_CUDA_V2(*o);
        }
    }
    return Ort::Session(env, path.c_str(), so);
}

std::vector<int64_t> batch_shape(const TensorSpec &t, int64_t batch) {
    std::vector<int64_t> out;
    for (size_t i = 0; i < t.shape.size(); i++)
        out.push_back(t.axes[i] == "batch" ? batch : t.axes[i] == "new_tokens" ? 1 : t.shape[i]);
    return out;
}

// The window-local layout of one layer parity (hiergen/windows.py WindowLayout.place).
struct WindowLayout {
    int text_len, grid, n_frames, window, shift;
    int per_axis() const { return (grid - 1 + shift) / window + 1; }
    int n_windows() const { return per_axis() * per_axis(); }
    // (window, block slot) of a code; a text code is in every window (-1) at slot = code
    std::pair<int, int> place(int code) const {
        if (code < text_len) return {-1, code};
        int P = grid * grid, rel = code - text_len, frame = rel / P, within = rel % P;
        int row = within / grid, col = within % grid;
        int wr = (row + shift) / window, wc = (col + shift) / window;
        int local = (row + shift - wr * window) * window + (col + shift - wc * window);
        return {wr * per_axis() + wc, text_len + frame * window * window + local};
    }
};

}  // namespace

// What an arena needs to know of one transformer's graphs (runtime/arena.py CacheSpec), read from the manifest.
struct CachePair {
    enum Kind { PLAIN, FRAME, WINDOW } kind = PLAIN;
    std::string past, next;      // decode graph input, its new key/value output
    int parity = 0;              // WINDOW: layer parity
    std::vector<int64_t> shape;  // the decode graph's past input for batch 1 (1, heads, slots, head_dim)
};

struct StepModel {
    std::string name;
    int text_len, grid, n_frames, image_vocab, threads;
    std::string tokens_name, codes_name, logits_name;
    std::vector<CachePair> pairs;
    WindowLayout layouts[2];
    bool windowed = false;
    std::string decode_path;
    std::vector<std::string> providers;
    std::unique_ptr<Ort::Session> prefill, decode;
    mutable std::mutex mu;                                      // guards by_batch: a model may be shared by threads
    mutable std::map<int, std::unique_ptr<Ort::Session>> by_batch;
    Ort::Env *env = nullptr;

    // The decode graph's session for `batch` sequences (OrtStepModel.decode_session): below
    // kSingleThreadBelow on the CPU, a one-thread session per batch size made on first use.
    Ort::Session &decode_session(int batch) const {
        if (batch >= kSingleThreadBelow || threads == 1 || providers[0] != "CPUExecutionProvider") return *decode;
        std::lock_guard<std::mutex> lock(mu);
        auto &s = by_batch[batch];
        if (!s) s = std::make_unique<Ort::Session>(make_session(*env, decode_path, providers, 1));
        return *s;
    }
};

class Engine {
public:
    Manifest manifest;
    Tokenizer tokenizer;
    Ort::Env env;
    std::vector<std::string> providers;
    std::string root;
    int threads;
    std::map<std::string, std::unique_ptr<StepModel>> models;
    std::unique_ptr<Ort::Session> vq_decoder;
    bool overlap = false;                                      // pixels decoded beside generation (run_generate)
    mutable std::mutex enc_mu;
    mutable std::unique_ptr<Ort::Session> vq_encoder;          // made on first use (init image, keyframes)
    Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);

    Engine(Manifest m, const std::string &dir, const std::string &backend, int th)
        : manifest(std::move(m)), tokenizer(manifest.vocab, manifest.text_len - 2),
          env(ORT_LOGGING_LEVEL_ERROR, "hiergen"), root(dir), threads(th) {
        providers = providers_for(backend);
        for (const char *name : {"t2i", "keyframe", "interp"}) models[name] = load_model(name);
        // With overlap (run_generate), finished frames decode on a second thread while later stages generate,
        // and the last stage's frames on two threads at once: one intra-op thread per decoder run.
        overlap = threads != 1 && providers[0] == "CPUExecutionProvider";
        vq_decoder = std::make_unique<Ort::Session>(make_session(
            env, join_path(root, manifest.fragment("vqvae_decoder").file), providers, overlap ? 1 : threads));
    }

    std::unique_ptr<StepModel> load_model(const std::string &name) {
        const Manifest &m = manifest;
        const FragmentSpec &step = m.fragment(name + "_step");
        if (step.prefill.empty() || step.decode.empty() || !step.has_kv)
            throw Error(HIERGEN_ERR_PACKAGE, step.name + " has no prefill/decode graphs or KV-cache pairs: " + kFix);
        const FragmentSpec &dec = m.fragment(step.decode), &pre = m.fragment(step.prefill);
        if (step.slot_axis != 2)
            throw Error(HIERGEN_ERR_PACKAGE, step.name + ": the arenas hold caches as (batch, heads, slots, head_dim); "
                                             "this package puts slots elsewhere: re-export it with this hiergen");
        auto sm = std::make_unique<StepModel>();
        sm->name = name;
        sm->text_len = m.text_len;
        sm->grid = m.grid;
        sm->n_frames = m.n_frames;
        sm->image_vocab = m.image_vocab;
        sm->threads = threads;
        sm->tokens_name = step.inputs.at(0).name;
        sm->codes_name = step.inputs.at(1).name;
        sm->logits_name = step.outputs.at(0).name;
        for (int p = 0; p < 2; p++) sm->layouts[p] = {m.text_len, m.grid, m.n_frames, m.window, p ? m.window / 2 : 0};
        for (auto &[past, next] : step.pairs) {
            CachePair c;
            c.past = past;
            c.next = next;
            const TensorSpec *in = dec.input(past);
            if (!in || !dec.output(next) || !pre.output(next))
                throw Error(HIERGEN_ERR_PACKAGE, dec.name + " or " + pre.name + " lacks the cache tensor " + past + "/" + next + ": " + kFix);
            c.shape = batch_shape(*in, 1);
            if (c.shape.size() != 4)
                throw Error(HIERGEN_ERR_PACKAGE, dec.name + ": cache input " + past + " is not (batch, heads, slots, head_dim): " + kFix);
            if (std::find(step.frame_local.begin(), step.frame_local.end(), past) != step.frame_local.end()) {
                c.kind = CachePair::FRAME;
                if (c.shape[2] != m.text_len + m.grid * m.grid)
                    throw Error(HIERGEN_ERR_PACKAGE, dec.name + ": frame-local cache " + past + " has " + std::to_string(c.shape[2]) + " slots: " + kFix);
            } else if (dec.window_local.count(past)) {
                c.kind = CachePair::WINDOW;
                c.parity = dec.window_local.at(past) ? 1 : 0;
                sm->windowed = true;
                if (c.shape[2] != m.text_len + m.n_frames * m.window * m.window)
                    throw Error(HIERGEN_ERR_PACKAGE, dec.name + ": window cache " + past + " has " + std::to_string(c.shape[2]) + " slots: " + kFix);
            } else if (c.shape[2] != m.text_len + m.n_frames * m.grid * m.grid) {
                throw Error(HIERGEN_ERR_PACKAGE, dec.name + ": cache " + past + " has " + std::to_string(c.shape[2]) + " slots: " + kFix);
            }
            sm->pairs.push_back(c);
        }
        sm->providers = providers;
        sm->env = &env;
        sm->decode_path = join_path(root, dec.file);
        sm->prefill = std::make_unique<Ort::Session>(make_session(env, join_path(root, pre.file), providers, threads));
        sm->decode = std::make_unique<Ort::Session>(make_session(env, sm->decode_path, providers, threads));
        return sm;
    }

    Ort::Session &encoder() const {
        std::lock_guard<std::mutex> lock(enc_mu);
        if (!vq_encoder)
            vq_encoder = std::make_unique<Ort::Session>(make_session(
                const_cast<Ort::Env &>(env), join_path(root, manifest.fragment("vqvae_encoder").file), providers, threads));
        return *vq_encoder;
    }
};

namespace {

// One stage's KV-cache arena in host memory, bound to the decode graph through IO binding (runtime/arena.py
// HostArena). Per pair: PLAIN one (B, H, slots, hd) tensor; FRAME one block per frame (text slots, then the
// frame's); WINDOW one block per Swin window of its layer parity. A decode step rebinds the frame-local /
// window-local inputs when it enters a new frame / window (a pointer per tensor, no copy) and copies its new
// keys/values (B x H rows of head_dim floats per pair) into their slot. Nothing is allocated per step.
class Arena {
public:
    Arena(const Engine &e, const StepModel &m, int batch)
        : m_(m), cpu_(e.cpu), B_(batch), sess_(m.decode_session(batch)), io_(sess_),
          on_cpu_(m.providers[0] == "CPUExecutionProvider") {
        L_ = m.text_len;
        P_ = m.grid * m.grid;
        tokens_.assign(B_, 0);
        codes_.assign(B_, 0);
        logits_.assign(size_t(B_) * m.image_vocab, 0.f);
        int64_t tshape[2] = {B_, 1}, lshape[3] = {B_, 1, m.image_vocab};
        tokens_v_ = Ort::Value::CreateTensor<int64_t>(e.cpu, tokens_.data(), tokens_.size(), tshape, 2);
        codes_v_ = Ort::Value::CreateTensor<int64_t>(e.cpu, codes_.data(), codes_.size(), tshape, 2);
        logits_v_ = Ort::Value::CreateTensor<float>(e.cpu, logits_.data(), logits_.size(), lshape, 3);
        io_.BindInput(m.tokens_name.c_str(), tokens_v_);
        io_.BindInput(m.codes_name.c_str(), codes_v_);
        io_.BindOutput(m.logits_name.c_str(), logits_v_);
        for (auto &c : m.pairs) {
            Pair p;
            p.spec = &c;
            p.H = c.shape[1];
            p.slots = c.shape[2];
            p.hd = c.shape[3];
            int n = c.kind == CachePair::FRAME ? m.n_frames : c.kind == CachePair::WINDOW ? m.layouts[c.parity].n_windows() : 1;
            std::vector<int64_t> shape{B_, p.H, p.slots, p.hd}, nshape{B_, p.H, 1, p.hd};
            size_t count = size_t(B_) * p.H * p.slots * p.hd;
            p.blocks.resize(n);
            for (int b = 0; b < n; b++) {
                p.blocks[b].assign(count, 0.f);
                p.values.push_back(Ort::Value::CreateTensor<float>(e.cpu, p.blocks[b].data(), count, shape.data(), 4));
            }
            p.next.assign(size_t(B_) * p.H * p.hd, 0.f);
            p.next_v = Ort::Value::CreateTensor<float>(e.cpu, p.next.data(), p.next.size(), nshape.data(), 4);
            pairs_.push_back(std::move(p));
        }
        for (auto &p : pairs_) {
            io_.BindInput(p.spec->past.c_str(), p.values[0]);
            io_.BindOutput(p.spec->next.c_str(), p.next_v);
        }
    }

    // A prefix (text, given frames) into the empty arena through the cache-free prefill graph.
    void prefill(const std::vector<int64_t> &tokens, const std::vector<int64_t> &codes, int T) {
        int64_t shape[2] = {B_, T};
        const Ort::MemoryInfo &cpu = cpu_;
        Ort::Value in[2] = {
            Ort::Value::CreateTensor<int64_t>(cpu, const_cast<int64_t *>(tokens.data()), tokens.size(), shape, 2),
            Ort::Value::CreateTensor<int64_t>(cpu, const_cast<int64_t *>(codes.data()), codes.size(), shape, 2)};
        const char *in_names[2] = {m_.tokens_name.c_str(), m_.codes_name.c_str()};
        std::vector<const char *> out_names;
        for (auto &p : pairs_) out_names.push_back(p.spec->next.c_str());
        auto out = m_.prefill->Run(Ort::RunOptions{nullptr}, in_names, in, 2, out_names.data(), out_names.size());
        for (size_t i = 0; i < pairs_.size(); i++) {
            Pair &p = pairs_[i];
            const float *src = out[i].GetTensorData<float>();
            auto info = out[i].GetTensorTypeAndShapeInfo().GetShape();
            if (info.size() != 4 || info[0] != B_ || info[1] != p.H || info[2] != T || info[3] != p.hd)
                throw Error(HIERGEN_ERR_RUNTIME, m_.name + " prefill: output " + p.spec->next + " has an unexpected shape");
            for (int t = 0; t < T; t++) {
                int code = int(codes[t]);               // every sequence of a step writes the same slots
                store(p, code, src + size_t(t) * p.hd, size_t(T) * p.hd);
            }
        }
    }

    // One image token per sequence at `code`: the decode graph on the bound arena. Returns logits (B, V).
    const float *decode(const int64_t *tokens, int code) {
        int f = (code - L_) / P_;
        for (auto &p : pairs_) {
            int want = 0;
            if (p.spec->kind == CachePair::FRAME) want = f;
            else if (p.spec->kind == CachePair::WINDOW) want = m_.layouts[p.spec->parity].place(code).first;
            if (want != p.bound || !on_cpu_) {           // a bound host input is copied at bind time off the CPU
                io_.BindInput(p.spec->past.c_str(), p.values[want]);
                p.bound = want;
            }
        }
        std::copy(tokens, tokens + B_, tokens_.begin());
        std::fill(codes_.begin(), codes_.end(), int64_t(code));
        if (!on_cpu_) {
            io_.BindInput(m_.tokens_name.c_str(), tokens_v_);
            io_.BindInput(m_.codes_name.c_str(), codes_v_);
        }
        sess_.Run(Ort::RunOptions{nullptr}, io_);
        for (auto &p : pairs_) store(p, code, p.next.data(), size_t(p.hd));
        return logits_.data();
    }

private:
    struct Pair {
        const CachePair *spec;
        int64_t H, slots, hd;
        std::vector<std::vector<float>> blocks;
        std::vector<Ort::Value> values;
        std::vector<float> next;
        Ort::Value next_v{nullptr};
        int bound = 0;
    };

    // src: (B, H, n, hd) new keys/values with row stride `stride` floats per (b, h); one slot's worth at src.
    void store(Pair &p, int code, const float *src, size_t stride) {
        auto put = [&](int block, int slot) {
            float *dst = p.blocks[block].data();
            for (int64_t r = 0; r < B_ * p.H; r++)
                std::memcpy(dst + (size_t(r) * p.slots + slot) * p.hd, src + r * stride, sizeof(float) * p.hd);
        };
        switch (p.spec->kind) {
        case CachePair::PLAIN:
            put(0, code);
            break;
        case CachePair::FRAME:
            if (code < L_)
                for (size_t b = 0; b < p.blocks.size(); b++) put(int(b), code);
            else
                put((code - L_) / P_, L_ + (code - L_) % P_);
            break;
        case CachePair::WINDOW: {
            auto [w, slot] = m_.layouts[p.spec->parity].place(code);
            if (w < 0)
                for (size_t b = 0; b < p.blocks.size(); b++) put(int(b), slot);
            else
                put(w, slot);
            break;
        }
        }
    }

    const StepModel &m_;
    const Ort::MemoryInfo &cpu_;
    int64_t B_;
    int L_, P_;
    Ort::Session &sess_;
    Ort::IoBinding io_;
    bool on_cpu_;
    std::vector<int64_t> tokens_, codes_;
    std::vector<float> logits_;
    Ort::Value tokens_v_{nullptr}, codes_v_{nullptr}, logits_v_{nullptr};
    std::vector<Pair> pairs_;
};

struct Cancelled {};

// Per-token progress of one stage; throws Error(CANCELLED) when the callback says stop.
struct Progress {
    const GenerateRequest *req;
    std::string stage;
    int done = 0, total = 0;
    void tick() {
        done++;
        if (req->progress && !req->progress(stage.c_str(), done, total, req->user_data))
            throw Error(HIERGEN_ERR_CANCELLED, "cancelled by the progress callback during " + stage + " (token " +
                                                   std::to_string(done) + " of " + std::to_string(total) + ")");
    }
};

using Tokens = std::vector<int64_t>;   // one frame's P tokens

// fill_frames (runtime/orchestrator.py): generate frames `generate` (in order) for S sequences. texts: per
// sequence its conditional and text-free prefix; given: frame slot -> per sequence P tokens; streams (S).
std::map<int, std::vector<Tokens>> fill_frames(const Engine &e, const StepModel &m,
                                               const std::vector<std::pair<Tokens, Tokens>> &texts,
                                               const std::map<int, std::vector<Tokens>> &given,
                                               const std::vector<int> &generate, double guidance,
                                               const SamplerOptions &opts, const std::vector<uint64_t> &streams,
                                               Progress &progress) {
    const int S = int(texts.size()), P = m.grid * m.grid, L = m.text_len, V = m.image_vocab;
    const int64_t start = m.image_vocab;
    const bool cfg = guidance != 1.0;
    const int rep = cfg ? 2 : 1, B = S * rep;
    Arena arena(e, m, B);

    // Prefill: the text, then each given frame's slots holding its previous token (<start> first).
    int T = L + int(given.size()) * P;
    Tokens tokens(size_t(B) * T), codes(T);
    for (int b = 0; b < B; b++) {
        const Tokens &text = b < S ? texts[b].first : texts[b - S].second;
        std::copy(text.begin(), text.end(), tokens.begin() + size_t(b) * T);
    }
    for (int t = 0; t < L; t++) codes[t] = t;
    int at = L;
    for (auto &[f, toks] : given) {
        for (int b = 0; b < B; b++) {
            const Tokens &src = toks[b % S];
            int64_t *dst = tokens.data() + size_t(b) * T + at;
            dst[0] = start;
            std::copy(src.begin(), src.end() - 1, dst + 1);
        }
        for (int w = 0; w < P; w++) codes[at + w] = L + f * P + w;
        at += P;
    }
    Tokens codes_b(size_t(B) * T);
    for (int b = 0; b < B; b++) std::copy(codes.begin(), codes.end(), codes_b.begin() + size_t(b) * T);
    arena.prefill(tokens, codes_b, T);

    std::map<int, std::vector<Tokens>> out;
    std::vector<int64_t> prev(B), guided;
    std::vector<float> mixed(cfg ? size_t(S) * V : 0);
    SampleScratch scratch;
    for (int f : generate) {
        std::vector<Tokens> made(S, Tokens(P));
        std::fill(prev.begin(), prev.end(), start);
        for (int w = 0; w < P; w++) {
            int code = L + f * P + w;
            const float *logits = arena.decode(prev.data(), code);                   // (B, V)
            if (cfg) {          // guide: uncond + scale * (cond - uncond), in float32 as NumPy computes it
                float s = float(guidance);
                for (size_t i = 0; i < size_t(S) * V; i++) {
                    float c = logits[i], u = logits[size_t(S) * V + i];
                    mixed[i] = u + s * (c - u);
                }
                logits = mixed.data();
            }
            for (int s = 0; s < S; s++) {
                double u = uniform(opts.seed, streams[s], uint64_t(code));
                int64_t tok = sample_row(logits + size_t(s) * V, V, u, opts, scratch);
                made[s][w] = tok;
                for (int r = 0; r < rep; r++) prev[r * S + s] = tok;
            }
            progress.tick();
        }
        out[f] = std::move(made);
    }
    return out;
}

// The rounds a generation runs before it has n frames (runtime/plan.py rounds_for).
int rounds_for(int frames) {
    for (int i = 0; i < 4; i++)
        if (kFrameCounts[i] == frames) return i;
    throw Error(HIERGEN_ERR_INVALID_ARGUMENT,
                "cannot make " + std::to_string(frames) +
                    " frames: the plan makes 5, 9, 17, 33 (5 keyframes, then each interpolation round doubles the rate)");
}

// keyframe_rounds (runtime/orchestrator.py): n user keyframes must be a count the plan passes on the way to frames.
void check_keyframe_count(int n, int frames) {
    rounds_for(frames);
    std::vector<int> fits;
    for (int c : kFrameCounts)
        if (c <= frames) fits.push_back(c);
    if (std::find(fits.begin(), fits.end(), n) != fits.end()) return;
    std::string list;
    for (size_t i = 0; i + 1 < fits.size(); i++) list += (i ? ", " : "") + std::to_string(fits[i]);
    throw Error(HIERGEN_ERR_IMAGE, std::to_string(n) + " keyframes cannot make " + std::to_string(frames) + " frames: give " +
                                       list + (fits.size() > 1 ? " or " : "") + std::to_string(fits.back()) +
                                       " keyframes for " + std::to_string(frames) +
                                       " frames (they become evenly spaced frames, first and last included, and "
                                       "interpolation fills in between), or change the frame count");
}

std::vector<Tokens> encode_frames(const Engine &e, const UserFrames &u, const char *label) {
    int size = e.manifest.image_size, P = e.manifest.grid * e.manifest.grid;
    if (u.width != size || u.height != size)
        throw Error(HIERGEN_ERR_IMAGE, std::string(label) + " is " + std::to_string(u.width) + "x" + std::to_string(u.height) +
                                           "; the model takes " + std::to_string(size) + "x" + std::to_string(size) +
                                           " RGB: centre-crop and resize it first (the Python runtime does this for you)");
    int64_t shape[4] = {u.n, size, size, 3};
    auto in = Ort::Value::CreateTensor<uint8_t>(e.cpu, const_cast<uint8_t *>(u.rgb.data()), u.rgb.size(), shape, 4);
    const FragmentSpec &spec = e.manifest.fragment("vqvae_encoder");
    const char *in_name = spec.inputs.at(0).name.c_str(), *out_name = spec.outputs.at(0).name.c_str();
    auto out = e.encoder().Run(Ort::RunOptions{nullptr}, &in_name, &in, 1, &out_name, 1);
    const int64_t *t = out[0].GetTensorData<int64_t>();
    if (int64_t(out[0].GetTensorTypeAndShapeInfo().GetElementCount()) != int64_t(u.n) * P)
        throw Error(HIERGEN_ERR_RUNTIME, "the VQ-VAE encoder returned an unexpected number of tokens");
    std::vector<Tokens> frames;
    for (int i = 0; i < u.n; i++) frames.emplace_back(t + size_t(i) * P, t + size_t(i + 1) * P);
    return frames;
}

// Frames a stage has finished, for the VQ-VAE decoder: their positions in the final video and their tokens.
struct PixelJob {
    std::vector<int> at;
    std::vector<int64_t> tokens;
};

// The frames of a stage holding K frames (all, or only the new odd ones a round made): frame j of K ends up
// at j * (F - 1) / (K - 1) of the F-frame video, since each later round puts a new frame between neighbours.
PixelJob finished_frames(const std::vector<Tokens> &frames, int F, bool only_new, size_t first = 0, size_t step = 1) {
    PixelJob job;
    const int K = int(frames.size());
    for (size_t j = first; j < frames.size(); j += step) {
        if (only_new && j % 2 == 0) continue;
        job.at.push_back(int(j) * (F - 1) / (K - 1));
        job.tokens.insert(job.tokens.end(), frames[j].begin(), frames[j].end());
    }
    return job;
}

// Pixels of a job's frames into v.rgb (allocated; jobs write disjoint frames), kDecodeChunk frames per run:
// the decoder's activations for all 33 frames at once took the process's peak memory from 124 MB (5 frames)
// to 242 MB; frames decode independently, so the pixels are the same (tested against Python).
void decode_pixels(const Engine &e, const PixelJob &job, Video &v) {
    const Manifest &man = e.manifest;
    const int P = man.grid * man.grid;
    const size_t frame_bytes = size_t(v.height) * v.width * 3;
    const FragmentSpec &spec = man.fragment("vqvae_decoder");
    const char *in_name = spec.inputs.at(0).name.c_str(), *out_name = spec.outputs.at(0).name.c_str();
    std::vector<int64_t> chunk;
    for (size_t f0 = 0; f0 < job.at.size(); f0 += kDecodeChunk) {
        int n = int(std::min(job.at.size() - f0, size_t(kDecodeChunk)));
        chunk.assign(job.tokens.begin() + f0 * P, job.tokens.begin() + (f0 + n) * P);
        int64_t shape[3] = {n, man.grid, man.grid};
        auto in = Ort::Value::CreateTensor<int64_t>(e.cpu, chunk.data(), chunk.size(), shape, 3);
        auto out = e.vq_decoder->Run(Ort::RunOptions{nullptr}, &in_name, &in, 1, &out_name, 1);
        auto oshape = out[0].GetTensorTypeAndShapeInfo().GetShape();
        if (oshape.size() != 4 || oshape[0] != n || oshape[1] != v.height || oshape[2] != v.width || oshape[3] != 3)
            throw Error(HIERGEN_ERR_RUNTIME, "the VQ-VAE decoder returned an unexpected shape");
        const uint8_t *px = out[0].GetTensorData<uint8_t>();
        for (int i = 0; i < n; i++)
            std::copy(px + i * frame_bytes, px + (i + 1) * frame_bytes, v.rgb.begin() + job.at[f0 + i] * frame_bytes);
    }
}

}  // namespace

Video run_generate(const Engine &e, const GenerateRequest &req) {
    const Manifest &man = e.manifest;
    const Plan &plan = man.plan;
    const int rounds = rounds_for(req.frames);
    const int P = man.grid * man.grid;
    if (req.init && req.keyframes)
        throw Error(HIERGEN_ERR_IMAGE, "give an init image or keyframes, not both: the first keyframe is frame 1");
    if (req.keyframes) check_keyframe_count(req.keyframes->n, req.frames);
    std::vector<Tokens> user;
    if (req.init) user = encode_frames(e, *req.init, "the init image");
    if (req.keyframes) user = encode_frames(e, *req.keyframes, "the keyframes");

    const int key_rate = plan.rate_for(caption_speed(req.prompt));
    auto texts = [&](int rate, int n) {
        std::pair<Tokens, Tokens> pair{e.tokenizer.encode(req.prompt, rate), e.tokenizer.encode(req.prompt, rate, true)};
        return std::vector<std::pair<Tokens, Tokens>>(n, pair);
    };
    const StepModel &t2i = *e.models.at("t2i"), &key = *e.models.at("keyframe"), &interp = *e.models.at("interp");
    Progress progress{&req, "", 0, 0};

    // Pixels: every frame is final once a stage makes it, so with overlap the VQ-VAE decoder turns each
    // stage's new frames into pixels on a second thread while the next stage generates (on the CPU the
    // small decode steps leave a core idle), and the last stage's frames on two threads at once.
    const int F = req.frames;
    Video v;
    v.n_frames = F;
    v.grid = man.grid;
    v.height = v.width = man.image_size;
    v.rgb.assign(size_t(F) * v.height * v.width * 3, 0);
    std::vector<std::future<void>> pixels;          // after v: unwinding waits for them before v goes
    auto emit = [&](const std::vector<Tokens> &fr, bool only_new, bool last) {
        if (!e.overlap) return;                     // decoded after the loop, on this thread
        PixelJob job = finished_frames(fr, F, only_new);
        PixelJob here;
        if (last) {                                 // the second half of the frames stays on this thread
            size_t half = job.at.size() / 2;
            here.at.assign(job.at.begin() + half, job.at.end());
            here.tokens.assign(job.tokens.begin() + half * P, job.tokens.end());
            job.at.resize(half);
            job.tokens.resize(half * P);
        }
        pixels.push_back(std::async(std::launch::async, [&e, &v, job = std::move(job)] { decode_pixels(e, job, v); }));
        if (last) decode_pixels(e, here, v);
    };

    std::vector<Tokens> frames;
    if (req.keyframes) {
        frames = user;
    } else {
        Tokens f1;
        if (req.init) {
            f1 = user[0];
        } else {
            progress = Progress{&req, "frame 1", 0, P};
            f1 = fill_frames(e, t2i, texts(key_rate, 1), {}, {0}, plan.guidance.at("t2i"), req.sampler, {0}, progress)[0][0];
        }
        progress = Progress{&req, "keyframes", 0, 4 * P};
        auto made = fill_frames(e, key, texts(key_rate, 1), {{0, {f1}}}, {1, 2, 3, 4}, plan.guidance.at("keyframe"),
                                req.sampler, {uint64_t(1) << 16}, progress);
        frames = {f1, made[1][0], made[2][0], made[3][0], made[4][0]};
    }
    const int done = rounds_for(int(frames.size()));
    emit(frames, false, done == rounds);
    int rate = key_rate << done;
    for (int r = done; r < rounds; r++) {
        rate *= 2;
        const int token_rate = std::min(rate, plan.max_rate_token);
        const int n = int(frames.size()) / 2;            // overlapping triples (2i, 2i+1, 2i+2)
        std::map<int, std::vector<Tokens>> given;
        std::vector<uint64_t> streams;
        for (int i = 0; i < n; i++) {
            given[0].push_back(frames[2 * i]);
            given[2].push_back(frames[2 * i + 1]);
            given[4].push_back(frames[2 * i + 2]);
            streams.push_back((uint64_t(2) << 16) + (uint64_t(r) << 8) + uint64_t(i));
        }
        progress = Progress{&req, "round " + std::to_string(r + 1), 0, 2 * P};
        auto made = fill_frames(e, interp, texts(token_rate, n), given, {1, 3}, plan.guidance.at("interp"), req.sampler,
                                streams, progress);
        std::vector<Tokens> next;
        for (int i = 0; i < n; i++) {
            next.push_back(frames[2 * i]);
            next.push_back(made[1][i]);
            next.push_back(frames[2 * i + 1]);
            next.push_back(made[3][i]);
        }
        next.push_back(frames.back());
        frames = std::move(next);
        emit(frames, true, r == rounds - 1);
    }
    if (int(frames.size()) != F) throw Error(HIERGEN_ERR_RUNTIME, "internal error: the rounds made the wrong frame count");

    v.fps = double(rate);
    for (auto &f : frames) v.tokens.insert(v.tokens.end(), f.begin(), f.end());
    if (!e.overlap) decode_pixels(e, finished_frames(frames, F, false), v);
    for (auto &p : pixels) p.get();                 // rethrows a decoder failure
    return v;
}

Engine *load_engine(const std::string &dir, const std::string &backend, int threads) {
    Manifest m = open_package(dir);
    return new Engine(std::move(m), dir, backend, threads);
}

const Manifest &engine_manifest(const Engine &e) { return e.manifest; }
const Tokenizer &engine_tokenizer(const Engine &e) { return e.tokenizer; }
const char *engine_device(const Engine &e) { return e.providers.empty() ? "" : e.providers[0].c_str(); }
void free_engine(Engine *e) { delete e; }

}  // namespace hiergen
