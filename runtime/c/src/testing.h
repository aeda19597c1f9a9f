/* Test hooks of libhiergen: exported for tests/test_clib.py, not part of the API (no stability promise). */
#ifndef HIERGEN_TESTING_H
#define HIERGEN_TESTING_H
#include "hiergen.h"
#ifdef __cplusplus
extern "C" {
#endif
HIERGEN_API double hiergen_test_uniform(uint64_t seed, uint64_t stream, uint64_t counter);
HIERGEN_API int64_t hiergen_test_sample(const float *logits, int32_t V, double u, double temperature, int32_t top_k,
                                        double top_p);
HIERGEN_API int32_t hiergen_test_keyframe_rate(const hiergen_model *model, const char *prompt);
HIERGEN_API int32_t hiergen_test_encode(const hiergen_model *model, const char *prompt, int32_t rate, bool drop_text,
                                        int64_t *ids, int32_t cap);
#ifdef __cplusplus
}
#endif
#endif
