/* hiergen-gen: a prompt to an MP4 through libhiergen, written with FFmpeg's libraries.
 *
 *   hiergen-gen a small red circle moves left slowly -o out.mp4 --frames 33 --seed 0
 *
 * Options: --model DIR (default: the source tree's models/default), --backend auto|tensorrt|cuda|cpu,
 * --threads N, --frames 5|9|17|33, --seed N, --temperature T, --top-k K, --top-p P, --strict,
 * --scale S (pixel enlargement, default 4, nearest neighbour), --fps F (default: the video's own rate).
 * H.264 (libx264) where FFmpeg has it, else MPEG-4 part 2. Exit status: 0 done, 1 failed, 2 bad usage.
 */
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hiergen.h"

#ifndef HIERGEN_DEFAULT_PACKAGE
#define HIERGEN_DEFAULT_PACKAGE "models/default"
#endif

static int usage(const char *msg) {
    fprintf(stderr, "hiergen-gen: %s\nusage: hiergen-gen PROMPT... -o OUT.mp4 [--frames 33] [--seed 0] [--model DIR] "
                    "[--backend auto] [--threads N] [--temperature T] [--top-k K] [--top-p P] [--strict] [--scale 4] "
                    "[--fps F]\n", msg);
    return 2;
}

static bool on_progress(const char *stage, int32_t done, int32_t total, void *user) {
    (void)user;
    if (done == total) fprintf(stderr, "hiergen-gen: %s done (%d tokens)\n", stage, total);
    return true;
}

/* Encode the video's frames (enlarged `scale` times) into path at fps. Returns 0 or an error message. */
static const char *write_mp4(const hiergen_video *v, const char *path, int scale, double fps) {
    static char err[256];
    const char *fail = NULL;
    AVFormatContext *fmt = NULL;
    AVCodecContext *enc = NULL;
    AVFrame *frame = NULL;
    AVPacket *pkt = NULL;
    struct SwsContext *sws = NULL;
    int W = v->width * scale, H = v->height * scale, ret;
    if (avformat_alloc_output_context2(&fmt, NULL, NULL, path) < 0 || !fmt) return "cannot make an output for that file name (use .mp4)";
    const AVCodec *codec = avcodec_find_encoder_by_name("libx264");
    if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    AVStream *st = codec ? avformat_new_stream(fmt, NULL) : NULL;
    enc = codec ? avcodec_alloc_context3(codec) : NULL;
    if (!st || !enc) { fail = "no H.264 or MPEG-4 encoder in this FFmpeg"; goto done; }
    int rate = (int)(fps * 1000 + 0.5);
    enc->width = W;
    enc->height = H;
    enc->pix_fmt = AV_PIX_FMT_YUV420P;
    enc->time_base = (AVRational){1000, rate};
    enc->framerate = (AVRational){rate, 1000};
    enc->gop_size = 12;
    if (codec->id == AV_CODEC_ID_H264) av_opt_set(enc->priv_data, "crf", "18", 0);
    else enc->bit_rate = 4000000;
    if (fmt->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    if (avcodec_open2(enc, codec, NULL) < 0) { fail = "cannot open the video encoder"; goto done; }
    avcodec_parameters_from_context(st->codecpar, enc);
    st->time_base = enc->time_base;
    if (!(fmt->oformat->flags & AVFMT_NOFILE) && avio_open(&fmt->pb, path, AVIO_FLAG_WRITE) < 0) {
        snprintf(err, sizeof err, "cannot write %s (does its folder exist?)", path);
        fail = err;
        goto done;
    }
    if (avformat_write_header(fmt, NULL) < 0) { fail = "cannot write the file header"; goto done; }
    frame = av_frame_alloc();
    pkt = av_packet_alloc();
    sws = sws_getContext(v->width, v->height, AV_PIX_FMT_RGB24, W, H, AV_PIX_FMT_YUV420P, SWS_POINT, NULL, NULL, NULL);
    if (!frame || !pkt || !sws) { fail = "out of memory"; goto done; }
    frame->format = AV_PIX_FMT_YUV420P;
    frame->width = W;
    frame->height = H;
    if (av_frame_get_buffer(frame, 0) < 0) { fail = "out of memory"; goto done; }
    for (int i = 0; i <= v->n_frames; i++) {         /* the last pass flushes the encoder */
        if (i < v->n_frames) {
            if (av_frame_make_writable(frame) < 0) { fail = "out of memory"; goto done; }
            const uint8_t *src[1] = {v->rgb + (size_t)i * v->height * v->width * 3};
            int stride[1] = {v->width * 3};
            sws_scale(sws, src, stride, 0, v->height, frame->data, frame->linesize);
            frame->pts = i;
        }
        if (avcodec_send_frame(enc, i < v->n_frames ? frame : NULL) < 0) { fail = "encoding failed"; goto done; }
        while ((ret = avcodec_receive_packet(enc, pkt)) == 0) {
            if (pkt->duration <= 0) pkt->duration = 1;   /* one frame: else the MP4's edit list drops the last */
            av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
            pkt->stream_index = st->index;
            if (av_interleaved_write_frame(fmt, pkt) < 0) { fail = "writing the file failed"; goto done; }
        }
        if (ret != AVERROR(EAGAIN) && ret != AVERROR_EOF) { fail = "encoding failed"; goto done; }
    }
    if (av_write_trailer(fmt) < 0) fail = "writing the file failed";
done:
    sws_freeContext(sws);
    av_packet_free(&pkt);
    av_frame_free(&frame);
    avcodec_free_context(&enc);
    if (fmt && !(fmt->oformat->flags & AVFMT_NOFILE) && fmt->pb) avio_closep(&fmt->pb);
    avformat_free_context(fmt);
    return fail;
}

int main(int argc, char **argv) {
    const char *out = NULL, *model_dir = HIERGEN_DEFAULT_PACKAGE, *backend = "auto";
    char prompt[1024] = "";
    int frames = 33, threads = 0, scale = 4, top_k = -1, strict = 0;
    unsigned long long seed = 0;
    double temperature = -1, top_p = -1, fps = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
#define VALUE() (has_value ? argv[++i] : (exit(usage("an option lacks its value")), ""))
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) out = VALUE();
        else if (!strcmp(a, "--frames")) frames = atoi(VALUE());
        else if (!strcmp(a, "--seed")) seed = strtoull(VALUE(), NULL, 10);
        else if (!strcmp(a, "--model")) model_dir = VALUE();
        else if (!strcmp(a, "--backend")) backend = VALUE();
        else if (!strcmp(a, "--threads")) threads = atoi(VALUE());
        else if (!strcmp(a, "--temperature")) temperature = atof(VALUE());
        else if (!strcmp(a, "--top-k")) top_k = atoi(VALUE());
        else if (!strcmp(a, "--top-p")) top_p = atof(VALUE());
        else if (!strcmp(a, "--scale")) scale = atoi(VALUE());
        else if (!strcmp(a, "--fps")) fps = atof(VALUE());
        else if (!strcmp(a, "--strict")) strict = 1;
        else if (a[0] == '-' && a[1] == '-') return usage("unknown option");
        else {
            if (strlen(prompt) + strlen(a) + 2 > sizeof prompt) return usage("prompt too long");
            if (prompt[0]) strcat(prompt, " ");
            strcat(prompt, a);
        }
    }
    if (!out) return usage("give the output file: -o OUT.mp4");
    av_log_set_level(AV_LOG_ERROR);
    if (scale < 1 || scale > 16) return usage("--scale must be 1 to 16");
    if (fps < 0) return usage("--fps must be > 0");

    hiergen_model *model = NULL;
    if (hiergen_model_load(model_dir, backend, threads, &model) != HIERGEN_OK) {
        fprintf(stderr, "hiergen-gen: %s\n", hiergen_last_error());
        return 1;
    }
    fprintf(stderr, "hiergen-gen: %s on %s\n", model_dir, hiergen_model_device(model));
    hiergen_params *p = hiergen_default_params();
    hiergen_status s = p ? HIERGEN_OK : HIERGEN_ERR_OUT_OF_MEMORY;
    if (s == HIERGEN_OK) s = hiergen_params_set_frames(p, frames);
    if (s == HIERGEN_OK) s = hiergen_params_set_seed(p, (uint64_t)seed);
    if (s == HIERGEN_OK && temperature >= 0) s = hiergen_params_set_temperature(p, temperature);
    if (s == HIERGEN_OK && top_k >= 0) s = hiergen_params_set_top_k(p, top_k);
    if (s == HIERGEN_OK && top_p >= 0) s = hiergen_params_set_top_p(p, top_p);
    if (s == HIERGEN_OK) s = hiergen_params_set_strict(p, strict);
    if (s == HIERGEN_OK) s = hiergen_params_set_progress(p, on_progress, NULL);
    hiergen_video *video = NULL;
    if (s == HIERGEN_OK) s = hiergen_generate(model, prompt, p, &video);
    int rc = 0;
    if (s != HIERGEN_OK) {
        fprintf(stderr, "hiergen-gen: %s\n", hiergen_last_error());
        rc = 1;
    } else {
        const char *err = write_mp4(video, out, scale, fps > 0 ? fps : video->fps);
        if (err) {
            fprintf(stderr, "hiergen-gen: %s\n", err);
            rc = 1;
        } else {
            printf("%s: %d frames, %dx%d, %g fps\n", out, video->n_frames, video->width * scale, video->height * scale,
                   fps > 0 ? fps : video->fps);
        }
    }
    hiergen_video_free(video);
    hiergen_params_free(p);
    hiergen_model_free(model);
    return rc;
}
