/* hiergen-check: drives libhiergen's C API through its error paths, a shared model on two threads and
 * small generations; exits 0 when every check holds. tests/test_clib.py runs it on the normal build and on
 * the AddressSanitizer + UndefinedBehaviorSanitizer build (where a leak or bad access aborts it).
 *
 *   hiergen-check PACKAGE MISSING_DIR CORRUPTED_PACKAGE WRONG_VERSION_PACKAGE
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hiergen.h"

static int failures = 0, checks = 0;

static void expect(int ok, const char *what) {
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "FAIL: %s (last error: %s)\n", what, hiergen_last_error());
    }
}

/* status s with a message containing `part`, and (where given) the out pointer left NULL */
static void expect_status(hiergen_status got, hiergen_status want, const char *part, const char *what) {
    int ok = got == want && strlen(hiergen_last_error()) > 0 && (!part || strstr(hiergen_last_error(), part));
    if (!ok) fprintf(stderr, "  %s: got %s, want %s\n", what, hiergen_status_name(got), hiergen_status_name(want));
    expect(ok, what);
}

static bool stop_after_10(const char *stage, int32_t done, int32_t total, void *user) {
    (void)stage; (void)total;
    int *calls = (int *)user;
    ++*calls;
    return done < 10;
}

struct job {
    const hiergen_model *model;
    hiergen_video *video;
    hiergen_status status;
};

static void *run_job(void *arg) {
    struct job *j = (struct job *)arg;
    hiergen_params *p = hiergen_default_params();
    hiergen_params_set_frames(p, 9);
    hiergen_params_set_seed(p, 3);
    j->status = hiergen_generate(j->model, "a large blue square moves up quickly", p, &j->video);
    hiergen_params_free(p);
    return NULL;
}

static int same_video(const hiergen_video *a, const hiergen_video *b) {
    return a && b && a->n_frames == b->n_frames && a->grid == b->grid &&
           memcmp(a->tokens, b->tokens, sizeof(int64_t) * a->n_frames * a->grid * a->grid) == 0 &&
           memcmp(a->rgb, b->rgb, (size_t)a->n_frames * a->height * a->width * 3) == 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PACKAGE MISSING_DIR CORRUPTED_PACKAGE WRONG_VERSION_PACKAGE\n", argv[0]);
        return 2;
    }
    hiergen_model *model = (hiergen_model *)1;
    hiergen_video *video = (hiergen_video *)1;

    /* null pointers */
    expect_status(hiergen_model_load(NULL, "auto", 0, &model), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "load(NULL dir)");
    expect(model == NULL, "load(NULL dir) leaves *out NULL");
    expect_status(hiergen_model_load(argv[1], "auto", 0, NULL), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "load(NULL out)");
    expect_status(hiergen_generate(NULL, "a", NULL, &video), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "generate(NULL model)");
    expect(video == NULL, "generate(NULL model) leaves *out NULL");
    expect_status(hiergen_params_set_seed(NULL, 1), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "set_seed(NULL)");
    hiergen_model_free(NULL);
    hiergen_params_free(NULL);
    hiergen_video_free(NULL);

    /* packages */
    model = (hiergen_model *)1;
    expect_status(hiergen_model_load(argv[2], "auto", 0, &model), HIERGEN_ERR_PACKAGE, "is not a model package", "missing package");
    expect(model == NULL, "missing package leaves *out NULL");
    expect_status(hiergen_model_load(argv[3], "auto", 0, &model), HIERGEN_ERR_PACKAGE, "does not match its SHA-256", "corrupted package");
    expect_status(hiergen_model_load(argv[4], "auto", 0, &model), HIERGEN_ERR_PACKAGE, "format version", "wrong format version");
    expect_status(hiergen_model_load(argv[1], "no-such-backend", 0, &model), HIERGEN_ERR_BACKEND, "unknown backend", "unknown backend");
    expect_status(hiergen_model_load(argv[1], "auto", -1, &model), HIERGEN_ERR_INVALID_ARGUMENT, "threads", "negative threads");
    hiergen_status s = hiergen_model_load(argv[1], "auto", 0, &model);
    expect(s == HIERGEN_OK && model != NULL, "load the package");
    if (s != HIERGEN_OK) return 1;
    expect(strlen(hiergen_last_error()) == 0, "a successful call clears the last error");

    hiergen_params *p = hiergen_default_params();
    expect(p != NULL, "default params");
    expect_status(hiergen_generate(model, "a red circle", NULL, &video), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "generate(NULL params)");
    expect_status(hiergen_generate(model, NULL, p, &video), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "generate(NULL prompt)");
    expect_status(hiergen_generate(model, "a red circle", p, NULL), HIERGEN_ERR_INVALID_ARGUMENT, "NULL", "generate(NULL out)");

    /* parameters out of range */
    expect_status(hiergen_params_set_temperature(p, -1), HIERGEN_ERR_INVALID_ARGUMENT, "temperature", "temperature -1");
    expect_status(hiergen_params_set_top_p(p, 0), HIERGEN_ERR_INVALID_ARGUMENT, "top_p", "top_p 0");
    expect_status(hiergen_params_set_top_k(p, -2), HIERGEN_ERR_INVALID_ARGUMENT, "top_k", "top_k -2");

    /* prompts */
    expect_status(hiergen_generate(model, "", p, &video), HIERGEN_ERR_PROMPT, "empty prompt", "empty prompt");
    expect_status(hiergen_generate(model, " \t\n", p, &video), HIERGEN_ERR_PROMPT, "empty prompt", "blank prompt");
    expect_status(hiergen_generate(model, "a b c d e f g h i j", p, &video), HIERGEN_ERR_PROMPT, "at most", "ten words");
    hiergen_params_set_strict(p, true);
    expect_status(hiergen_generate(model, "a small red dragon moves left slowly", p, &video), HIERGEN_ERR_PROMPT,
                  "'dragon'", "unknown word with strict");
    expect(video == NULL, "refused prompt leaves *out NULL");
    hiergen_params_set_strict(p, false);

    /* frame counts */
    int32_t counts[8];
    int32_t n_counts = hiergen_model_frame_counts(model, counts, 8);
    expect(n_counts == 4 && counts[0] == 5 && counts[3] == 33, "frame counts 5, 9, 17, 33");
    hiergen_params_set_frames(p, 7);
    expect_status(hiergen_generate(model, "a small red circle moves left slowly", p, &video), HIERGEN_ERR_INVALID_ARGUMENT,
                  "cannot make 7 frames", "7 frames");
    hiergen_params_set_frames(p, 5);

    /* user frames */
    int size = hiergen_model_image_size(model);
    expect(size == 64, "image size 64");
    uint8_t *small = calloc(32 * 32 * 3, 1);
    expect(hiergen_params_set_init_image(p, small, 32, 32) == HIERGEN_OK, "set a 32x32 init image");
    expect_status(hiergen_generate(model, "a small red circle moves left slowly", p, &video), HIERGEN_ERR_IMAGE, "64x64",
                  "wrong-sized init image");
    expect(video == NULL, "wrong-sized init image leaves *out NULL");
    hiergen_params_set_init_image(p, NULL, 0, 0);
    expect_status(hiergen_params_set_init_image(p, small, 0, 32), HIERGEN_ERR_IMAGE, "width", "0-wide init image");
    free(small);
    uint8_t *three = calloc((size_t)3 * size * size * 3, 1);
    hiergen_params_set_keyframes(p, three, 3, size, size);
    expect_status(hiergen_generate(model, "a small red circle moves left slowly", p, &video), HIERGEN_ERR_IMAGE,
                  "3 keyframes cannot make 5 frames", "3 keyframes");
    hiergen_params_set_init_image(p, three, size, size);
    expect_status(hiergen_generate(model, "a small red circle moves left slowly", p, &video), HIERGEN_ERR_IMAGE,
                  "not both", "init image and keyframes");
    hiergen_params_set_init_image(p, NULL, 0, 0);
    hiergen_params_set_keyframes(p, NULL, 0, 0, 0);
    free(three);

    /* cancel from the progress callback */
    int calls = 0;
    hiergen_params_set_progress(p, stop_after_10, &calls);
    expect_status(hiergen_generate(model, "a small red circle moves left slowly", p, &video), HIERGEN_ERR_CANCELLED,
                  "cancelled", "cancel");
    expect(video == NULL && calls == 10, "cancel: no video, the callback not called again");
    hiergen_params_set_progress(p, NULL, NULL);

    /* a generation; its frames as an init image and as keyframes */
    s = hiergen_generate(model, "a small red wibble moves left slowly", p, &video);      /* unknown word, not strict */
    expect(s == HIERGEN_OK && video && video->n_frames == 5 && video->width == 64 && video->fps == 1.0,
           "5 frames of a prompt with an unknown word");
    if (video) {
        hiergen_video *v2 = NULL;
        hiergen_params_set_init_image(p, video->rgb, size, size);
        s = hiergen_generate(model, "a small red circle moves left slowly", p, &v2);
        expect(s == HIERGEN_OK && v2 && v2->n_frames == 5, "generate from an init image");
        hiergen_video_free(v2);
        v2 = NULL;
        hiergen_params_set_init_image(p, NULL, 0, 0);
        hiergen_params_set_keyframes(p, video->rgb, 5, size, size);
        hiergen_params_set_frames(p, 9);
        s = hiergen_generate(model, "a small red circle moves left slowly", p, &v2);
        expect(s == HIERGEN_OK && v2 && v2->n_frames == 9, "generate 9 frames from 5 keyframes");
        hiergen_video_free(v2);
        hiergen_video_free(video);
        video = NULL;
    }
    hiergen_params_free(p);

    /* one model, two threads: the same videos as one after the other */
    struct job seq = {model, NULL, HIERGEN_OK}, jobs[2] = {{model, NULL, HIERGEN_OK}, {model, NULL, HIERGEN_OK}};
    run_job(&seq);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, run_job, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    expect(seq.status == HIERGEN_OK && jobs[0].status == HIERGEN_OK && jobs[1].status == HIERGEN_OK, "threads: all ok");
    expect(same_video(seq.video, jobs[0].video) && same_video(seq.video, jobs[1].video), "threads: same videos");
    hiergen_video_free(seq.video);
    for (int i = 0; i < 2; i++) hiergen_video_free(jobs[i].video);

    hiergen_model_free(model);
    printf("hiergen-check: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
