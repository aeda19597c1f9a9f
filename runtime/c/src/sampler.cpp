// Token sampling over a counter-based generator, bit for bit as runtime/sampler.py specifies it:
//   mix64(x):  x ^= x >> 30; x *= 0xBF58476D1CE4E5B9; x ^= x >> 27; x *= 0x94D049BB133111EB; x ^= x >> 31
//   key = mix64(seed + 0x9E3779B97F4A7C15 * (stream + 1)); bits = mix64(key ^ (counter * 0xD1B54A32D192ED69))
//   uniform = (bits >> 11) * 2^-53
// Sampling in float64: greedy when top_k == 1 or temperature == 0 (lowest index among equal maxima);
// otherwise the top_k largest logits (value descending, index ascending), / temperature, softmax, the
// smallest prefix reaching top_p, and the first index whose cumulative probability exceeds u * total.
// Sums are NumPy's pairwise sums (the order np.sum adds in), exp is the C library's (NumPy calls it too on
// x86-64 without AVX-512), so equal logits give equal tokens in both runtimes.
#include <algorithm>
#include <cmath>

#include "internal.hpp"

namespace hiergen {

uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t key = mix64(seed + 0x9E3779B97F4A7C15ull * (stream + 1));
    uint64_t bits = mix64(key ^ (counter * 0xD1B54A32D192ED69ull));
    return double(bits >> 11) * 0x1p-53;
}

// NumPy's pairwise summation of float64 (numpy/_core/src/umath/loops_utils.h.src, PW_BLOCKSIZE 128).
static double pairwise_sum(const double *a, size_t n) {
    if (n < 8) {
        double res = 0.;
        for (size_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        size_t i = 8;
        for (; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

int64_t sample_row(const float *z, int V, double u, const SamplerOptions &o, SampleScratch &w) {
    if (o.greedy()) {                         // np.argmax: the first maximum (the first NaN if any)
        int best = 0;
        for (int i = 0; i < V; i++) {
            if (std::isnan(z[i])) return i;
            if (z[i] > z[best]) best = i;
        }
        return best;
    }
    int k = (o.top_k == 0 || o.top_k >= V) ? V : o.top_k;
    w.order.resize(V);
    for (int i = 0; i < V; i++) w.order[i] = i;
    auto before = [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
    if (k == V)
        std::sort(w.order.begin(), w.order.end(), before);
    else
        std::partial_sort(w.order.begin(), w.order.begin() + k, w.order.end(), before);
    w.p.resize(k);
    w.c.resize(k);
    double *p = w.p.data(), *c = w.c.data();
    for (int i = 0; i < k; i++) p[i] = double(z[w.order[i]]);
    if (o.temperature != 1.0)
        for (int i = 0; i < k; i++) p[i] /= o.temperature;
    double top = p[0];
    for (int i = 0; i < k; i++) p[i] = std::exp(p[i] - top);
    double s = pairwise_sum(p, k);
    for (int i = 0; i < k; i++) p[i] /= s;
    if (o.top_p < 1.0) {
        double acc = 0;                        // np.cumsum(p) - p: the mass strictly before each candidate
        for (int i = 0; i < k; i++) {
            acc += p[i];
            if (!(acc - p[i] < o.top_p)) p[i] = 0.0;
        }
    }
    double acc = 0;
    for (int i = 0; i < k; i++) c[i] = acc += p[i];
    double limit = u * c[k - 1];
    int idx = 0;
    for (int i = 0; i < k; i++) idx += c[i] <= limit;
    return w.order[std::min(idx, k - 1)];
}

}  // namespace hiergen
