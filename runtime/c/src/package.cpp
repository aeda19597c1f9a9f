// The model package: manifest.json read with nlohmann-json, format version and SHA-256 of every file checked,
// with the Python runtime's messages (runtime/package.py), so both runtimes refuse a package the same way.
#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "internal.hpp"

namespace hiergen {

using json = nlohmann::json;

const char *const kFix =
    "reinstall hiergen for the shipped model, or rebuild the package with `hiergen export` "
    "(needs pip install 'hiergen[train]' and the checkpoints)";

static const char *const kFragments[] = {"vqvae_encoder", "vqvae_decoder", "t2i_step",    "keyframe_step",
                                         "interp_step",   "t2i_prefill",   "keyframe_prefill", "interp_prefill",
                                         "t2i_decode",    "keyframe_decode", "interp_decode"};

std::string join_path(const std::string &dir, const std::string &file) {
    std::string d = dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();       // as Python's Path(dir) / file prints it
    return d.empty() ? file : d + "/" + file;
}

const TensorSpec *FragmentSpec::input(const std::string &n) const {
    for (auto &t : inputs)
        if (t.name == n) return &t;
    return nullptr;
}

const TensorSpec *FragmentSpec::output(const std::string &n) const {
    for (auto &t : outputs)
        if (t.name == n) return &t;
    return nullptr;
}

const FragmentSpec &Manifest::fragment(const std::string &name) const {
    auto it = fragments.find(name);
    if (it == fragments.end()) throw Error(HIERGEN_ERR_PACKAGE, "the manifest lists no fragment " + name + ": " + kFix);
    return it->second;
}

int Plan::rate_for(const std::string &speed) const {
    auto it = keyframe_rate.find(speed.empty() ? "default" : speed);
    return it != keyframe_rate.end() ? it->second : keyframe_rate.at("default");
}

// Python's repr() of a JSON value, for messages that must read like the Python runtime's.
static std::string py_repr(const json &v) {
    if (v.is_null()) return "None";
    if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
    if (v.is_string()) {
        std::string s = v.get<std::string>(), out = "'";
        for (char ch : s) {
            if (ch == '\\' || ch == '\'') out += '\\';
            out += ch;
        }
        return out + "'";
    }
    return v.dump();
}

static TensorSpec tensor(const json &d) {
    TensorSpec t;
    t.name = d.at("name").get<std::string>();
    t.dtype = d.at("dtype").get<std::string>();
    for (auto &ax : d.at("shape")) {
        if (ax.is_string()) {
            t.shape.push_back(-1);
            t.axes.push_back(ax.get<std::string>());
        } else {
            t.shape.push_back(ax.get<int64_t>());
            t.axes.emplace_back();
        }
    }
    return t;
}

static FragmentSpec fragment(const std::string &name, const json &d) {
    FragmentSpec f;
    f.name = name;
    f.file = d.at("file").get<std::string>();
    for (auto &t : d.at("inputs")) f.inputs.push_back(tensor(t));
    for (auto &t : d.at("outputs")) f.outputs.push_back(tensor(t));
    f.precision = d.value("precision", std::string("fp32"));
    f.sha256 = d.value("sha256", std::string());
    f.prefill = d.contains("prefill") && !d["prefill"].is_null() ? d["prefill"].get<std::string>() : "";
    f.decode = d.contains("decode") && !d["decode"].is_null() ? d["decode"].get<std::string>() : "";
    if (d.contains("kv_cache")) {
        const json &kv = d["kv_cache"];
        f.has_kv = true;
        for (auto &p : kv.at("pairs")) f.pairs.emplace_back(p.at(0).get<std::string>(), p.at(1).get<std::string>());
        f.slot_axis = kv.at("slot_axis").get<int>();
        if (kv.contains("frame_local"))
            for (auto &n : kv["frame_local"]) f.frame_local.push_back(n.get<std::string>());
        if (kv.contains("window_local"))
            for (auto &[k, v] : kv["window_local"].items()) f.window_local[k] = v.get<int>();
    }
    return f;
}

static Manifest parse(const json &m) {
    Manifest out;
    const json &cfg = m.at("model_config");
    out.text_len = cfg.at("text_len").get<int>();
    out.grid = cfg.at("grid").get<int>();
    out.n_frames = cfg.at("n_frames").get<int>();
    out.image_vocab = cfg.at("image_vocab").get<int>();
    out.window = cfg.at("window").get<int>();
    out.image_size = m.at("vq_config").at("image_size").get<int>();
    out.vocab = m.at("vocab").get<std::vector<std::string>>();
    const json &plan = m.at("plan");
    out.plan.keyframe_rate = plan.at("keyframe_rate").get<std::map<std::string, int>>();
    out.plan.keyframe_rate.at("default");
    out.plan.max_rate_token = plan.at("max_rate_token").get<int>();
    out.plan.guidance = plan.at("guidance").get<std::map<std::string, double>>();
    for (const char *s : {"t2i", "keyframe", "interp"}) out.plan.guidance.at(s);
    out.plan.temperature = plan.at("temperature").get<double>();
    out.plan.top_k = plan.at("top_k").get<int>();
    out.plan.top_p = plan.at("top_p").get<double>();
    const json &w = m.at("weights");
    out.weights_file = w.at("file").get<std::string>();
    out.weights_sha256 = w.at("sha256").get<std::string>();
    for (auto &[name, f] : m.at("fragments").items()) out.fragments[name] = fragment(name, f);
    return out;
}

std::string sha256_file(const std::string &path) {
    std::FILE *fp = std::fopen(path.c_str(), "rb");
    if (!fp) throw Error(HIERGEN_ERR_PACKAGE, path + " is missing: " + kFix);
    std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX *)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    std::vector<unsigned char> buf(1 << 20);
    bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
    size_t n;
    while (ok && (n = std::fread(buf.data(), 1, buf.size(), fp)) > 0) ok = EVP_DigestUpdate(ctx.get(), buf.data(), n) == 1;
    bool read_error = std::ferror(fp) != 0;
    std::fclose(fp);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!ok || read_error || EVP_DigestFinal_ex(ctx.get(), md, &len) != 1)
        throw Error(HIERGEN_ERR_PACKAGE, "cannot read " + path + ": " + kFix);
    static const char *hex = "0123456789abcdef";
    std::string out;
    for (unsigned i = 0; i < len; i++) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 15];
    }
    return out;
}

static void verify_file(const std::string &root, const std::string &file, const std::string &want) {
    std::string f = join_path(root, file);
    std::ifstream probe(f, std::ios::binary);
    if (!probe.good()) throw Error(HIERGEN_ERR_PACKAGE, f + " is missing: " + kFix);
    if (sha256_file(f) != want)
        throw Error(HIERGEN_ERR_PACKAGE,
                    f + " does not match its SHA-256 in the manifest (modified or corrupted): " + kFix);
}

Manifest open_package(const std::string &dir) {
    std::string p = join_path(dir, "manifest.json");
    std::ifstream in(p, std::ios::binary);
    if (!in.good())
        throw Error(HIERGEN_ERR_PACKAGE, dir + " is not a model package (no readable manifest.json): " + kFix);
    std::stringstream ss;
    ss << in.rdbuf();
    json m;
    try {
        m = json::parse(ss.str());
    } catch (const json::exception &e) {
        throw Error(HIERGEN_ERR_PACKAGE, p + " is not valid JSON (" + e.what() + "): " + kFix);
    }
    if (!m.is_object()) throw Error(HIERGEN_ERR_PACKAGE, p + " is malformed (not a JSON object): " + kFix);
    json fmt = m.contains("format") ? m["format"] : json(), ver = m.contains("format_version") ? m["format_version"] : json();
    if (!(fmt.is_string() && fmt.get<std::string>() == kFormat && ver.is_number_integer() && ver.get<int64_t>() == kFormatVersion))
        throw Error(HIERGEN_ERR_PACKAGE, p + " has format " + py_repr(fmt) + " format version " + py_repr(ver) +
                                             "; this hiergen reads '" + kFormat + "' format version " +
                                             std::to_string(kFormatVersion) + ": " + kFix +
                                             " with this hiergen version (or install the hiergen that wrote it)");
    std::string missing;
    const json *frags = m.contains("fragments") && m["fragments"].is_object() ? &m["fragments"] : nullptr;
    for (const char *f : kFragments)
        if (!frags || !frags->contains(f)) missing += (missing.empty() ? "" : ", ") + std::string(f);
    if (!missing.empty()) throw Error(HIERGEN_ERR_PACKAGE, p + " lists no fragment " + missing + ": " + kFix);
    Manifest out;
    try {
        out = parse(m);
    } catch (const json::exception &e) {
        throw Error(HIERGEN_ERR_PACKAGE, p + " is malformed (" + e.what() + "): " + kFix);
    } catch (const std::out_of_range &e) {
        throw Error(HIERGEN_ERR_PACKAGE, p + " is malformed (" + e.what() + "): " + kFix);
    }
    // This library runs the fp32 reference fragments only (quantized builds are for the Python runtime).
    // (`hiergen quantize` writes a "quantization" block naming the package's precision.)
    std::string top = "fp32";
    if (m.contains("quantization") && m["quantization"].is_object() && m["quantization"].contains("precision"))
        top = m["quantization"]["precision"].is_string() ? m["quantization"]["precision"].get<std::string>() : "?";
    else if (m.contains("precision") && m["precision"].is_string())
        top = m["precision"].get<std::string>();
    if (top != "fp32")
        throw Error(HIERGEN_ERR_PACKAGE, p + " is a " + top + " package; libhiergen runs fp32 packages only: "
                                             "load the fp32 package (models/default) or use the Python runtime");
    for (auto &[name, f] : out.fragments)
        if (f.precision != "fp32")
            throw Error(HIERGEN_ERR_PACKAGE, p + ": fragment " + name + " has precision " + f.precision +
                                                 "; libhiergen runs fp32 packages only: load the fp32 package "
                                                 "(models/default) or use the Python runtime");
    verify_file(dir, out.weights_file, out.weights_sha256);
    for (const char *f : kFragments) verify_file(dir, out.fragments[f].file, out.fragments[f].sha256);
    return out;
}

}  // namespace hiergen
