// The text front end, as the Python runtime has it: prompt checks (runtime/pipeline.py check_prompt), the
// caption grammar's speed word (hiergen/captions.py parse), and the word-level tokenizer
// (hiergen/tokenizer.py). Words are ASCII: the prompt is lowercased and split on ASCII whitespace; a word
// with other bytes is an unknown word, as in Python (the vocabulary is ASCII).
#include <algorithm>
#include <set>

#include "internal.hpp"

namespace hiergen {

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' ||
                                   (c >= '\x1c' && c <= '\x1f'); }

std::vector<std::string> split_ws(const std::string &s) {
    std::vector<std::string> out;
    size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && is_ws(s[i])) i++;
        size_t j = i;
        while (j < s.size() && !is_ws(s[j])) j++;
        if (j > i) out.push_back(s.substr(i, j - i));
        i = j;
    }
    return out;
}

std::string lower_ascii(std::string s) {
    for (char &c : s)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return s;
}

static bool special(const std::string &t) { return t.size() > 1 && t.front() == '<' && t.back() == '>'; }

Tokenizer::Tokenizer(const std::vector<std::string> &v, int mw) : vocab(v), max_words(mw) {
    for (size_t i = 0; i < v.size(); i++) index.emplace(v[i], int64_t(i));
    for (const char *t : {"<pad>", "<unk>", "<boi>"})
        if (!index.count(t)) throw Error(HIERGEN_ERR_PACKAGE, std::string("bad vocabulary: missing ") + t + ": " + kFix);
    if (index.size() != v.size()) throw Error(HIERGEN_ERR_PACKAGE, std::string("bad vocabulary: duplicate entries: ") + kFix);
}

std::vector<int64_t> Tokenizer::encode(const std::string &text, int rate, bool drop_text) const {
    std::string rate_tok = "<" + std::to_string(rate) + "fps>";
    auto r = index.find(rate_tok);
    if (r == index.end()) throw Error(HIERGEN_ERR_PACKAGE, "unknown frame rate " + std::to_string(rate) + " in the model's vocabulary");
    std::vector<std::string> words = drop_text ? std::vector<std::string>() : split_ws(lower_ascii(text));
    if (int(words.size()) > max_words)
        throw Error(HIERGEN_ERR_PROMPT, "prompt has " + std::to_string(words.size()) + " words; the model reads at most " +
                                            std::to_string(max_words));
    std::vector<int64_t> ids{r->second};
    for (auto &w : words) {
        auto it = index.find(w);
        ids.push_back(it != index.end() ? it->second : index.at("<unk>"));
    }
    ids.resize(1 + max_words, index.at("<pad>"));
    ids.push_back(index.at("<boi>"));
    return ids;
}

std::vector<std::string> Tokenizer::unknown_words(const std::string &text) const {
    std::vector<std::string> out;
    for (auto &w : split_ws(lower_ascii(text)))
        if (!index.count(w) || special(w)) out.push_back(w);
    return out;
}

std::string check_prompt(const char *prompt, const Tokenizer &tok, bool strict) {
    if (!prompt) throw Error(HIERGEN_ERR_INVALID_ARGUMENT, "prompt is NULL: pass the text, e.g. 'a small red circle moves left slowly'");
    std::string cleaned;
    for (auto &w : split_ws(prompt)) cleaned += (cleaned.empty() ? "" : " ") + w;
    if (cleaned.empty())
        throw Error(HIERGEN_ERR_PROMPT, "empty prompt: describe the video, e.g. 'a small red circle moves left slowly'");
    size_t n = split_ws(cleaned).size();
    if (int(n) > tok.max_words)
        throw Error(HIERGEN_ERR_PROMPT, "prompt has " + std::to_string(n) + " words; the model reads at most " +
                                            std::to_string(tok.max_words) +
                                            ": shorten it to 'a <size> <colour> <shape> <motion> [<speed>]'");
    auto unknown = tok.unknown_words(cleaned);
    if (!unknown.empty() && strict) {
        std::string msg = "the model never saw ";
        for (size_t i = 0; i < unknown.size(); i++) msg += (i ? ", '" : "'") + unknown[i] + "'";
        throw Error(HIERGEN_ERR_PROMPT, msg + "; they are read as <unk> (turn strict off to generate anyway)");
    }
    return cleaned;
}

// The caption grammar 'a <size> <colour> <shape> <motion> [<speed>]' (hiergen/captions.py). The manifest
// carries the vocabulary but not the grammar, so the grammar is written here a second time; a test compares
// the keyframe rate both runtimes pick for every caption of the grammar and for broken ones.
static const std::set<std::string> kSizes{"small", "large"};
static const std::set<std::string> kColours{"red", "orange", "yellow", "green", "cyan", "blue", "purple", "white"};
static const std::set<std::string> kShapes{"circle", "square", "triangle"};
static const std::set<std::string> kSpeeds{"slowly", "quickly"};
static const std::set<std::string> kWords{"a", "small", "large", "red", "orange", "yellow", "green", "cyan", "blue",
                                          "purple", "white", "circle", "square", "triangle", "moves", "then",
                                          "bounces", "stays", "still", "left", "right", "up", "down", "slowly",
                                          "quickly"};

static bool is_motion(const std::string &m) {
    static const char *dirs[] = {"left", "right", "up", "down"};
    if (m == "bounces" || m == "stays still") return true;
    for (int a = 0; a < 4; a++) {
        if (m == std::string("moves ") + dirs[a]) return true;
        for (int b = 0; b < 4; b++)
            if ((a < 2) != (b < 2) && m == std::string("moves ") + dirs[a] + " then " + dirs[b]) return true;
    }
    return false;
}

std::string caption_speed(const std::string &prompt) {
    std::string t = lower_ascii(prompt);
    std::replace(t.begin(), t.end(), ',', ' ');
    auto words = split_ws(t);
    if (words.empty()) return "";
    for (auto &w : words)
        if (!kWords.count(w)) return "";
    size_t i = words[0] == "a" ? 1 : 0;
    if (words.size() - i < 4) return "";
    const std::string &size = words[i], &colour = words[i + 1], &shape = words[i + 2];
    std::vector<std::string> rest(words.begin() + i + 3, words.end());
    std::string speed = !rest.empty() && kSpeeds.count(rest.back()) ? rest.back() : "";
    if (!speed.empty()) rest.pop_back();
    std::string motion;
    for (auto &w : rest) motion += (motion.empty() ? "" : " ") + w;
    if (!is_motion(motion) || !kSizes.count(size) || !kColours.count(colour) || !kShapes.count(shape)) return "";
    if (motion == "stays still" ? !speed.empty() : speed.empty()) return "";
    return speed;
}

}  // namespace hiergen
