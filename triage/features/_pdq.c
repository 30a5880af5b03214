/* PDQ of a frame's luma, straight from the decoder's Y plane, and a small grey picture of it.
 *
 * The video stage hashes every sampled frame. PDQ as pdqhash computes it takes RGB, makes the
 * float luma in numpy, then filters the whole picture (two box passes along rows and along
 * columns, each a serial running sum) only to keep 64x64 samples of the result. So the stage
 * used to convert each frame to a small RGB picture first, and hashed that: half its time per
 * frame, and hashes 10-24 bits from those of the full-size frame that other systems compute.
 *
 * Here the filter is applied only where its result is kept. The two box passes along one axis
 * are one linear filter (a tent, with the box's shrinking windows at the edges); its weights are
 * worked out for the 64 positions the decimation keeps, and the picture is filtered down its
 * columns at the 64 kept rows (each input row read once, its contribution added to the one or
 * two kept rows it reaches, vectorised along the row), then along those 64 rows at the 64 kept
 * columns. Quality, the 16x16 DCT and the median are PDQ's (pdqhash-2017-10-09). Same filter,
 * same arithmetic in float, summed in another order: on the same luma, the hash agrees with
 * pdqhash's within rounding (pictures.py checks this on import and falls back to pdqhash if it
 * ever does not), at every size, in a fraction of the time (a 720p frame: ~0.3 ms).
 *
 * The luma is the Y plane's 8-bit values, clamped to 16-235 and scaled to 0-255 when the frame
 * is limited range, as PDQ's luma of the frame's RGB would be. In the same pass the
 * frame is averaged over k x k blocks into a small grey picture (for pHash and the strip).
 *
 * luma_hashes(buffer, rows, cols, stride, limited, k) -> (hex, quality, small, srows, scols):
 *   buffer holds rows lines of cols uint8, stride bytes apart; hex is the reference's string
 *   (words 15..0 as %04x); small is srows x scols uint8 (rows // k, cols // k; empty if k is 0).
 *   Pictures under 5 px a side get PDQ's answer for them: a zero hash of quality 0.
 * The GIL is released while computing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_DIM 5

static float DCT[16][64];          /* rows 1..16 of the 64-point DCT-II, scaled by sqrt(2/64) */

static void init_dct(void) {
    const double pi = 3.14159265358979323846;
    const float scale = (float)sqrt(2.0 / 64.0);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 64; j++)
            DCT[i][j] = (float)(scale * cos((pi / 2.0 / 64.0) * (i + 1) * (2 * j + 1)));
}

/* PDQ's box window along a dimension of `length`: half of length / 64, rounded up. */
static int window(int length) { return (length + 2 * 64 - 1) / (2 * 64); }

/* The box filter's window for output o of a length-n line: [lo, hi], as PDQ's running sum has
 * it (a window of w, (w + 2) / 2 - 1 before o and the rest after, cut at the ends). */
static void box_span(int o, int n, int w, int *lo, int *hi) {
    const int before = w - (w + 2) / 2, after = (w + 2) / 2 - 1;
    *lo = o - before < 0 ? 0 : o - before;
    *hi = o + after > n - 1 ? n - 1 : o + after;
}

/* Two box passes as one filter at output p: weights of inputs start..start+len-1 (len <= 4w). */
typedef struct {
    int start, len;
    float *w;
} Tap;

static void tent(int p, int n, int w, Tap *t) {       /* w <= 512: n <= 65535 */
    int lo, hi;
    box_span(p, n, w, &lo, &hi);
    int a, b, c, d;
    box_span(lo, n, w, &a, &b);
    box_span(hi, n, w, &c, &d);
    t->start = a;
    t->len = d - a + 1;
    double acc[4 * 512 + 4];
    for (int k = 0; k < t->len; k++) acc[k] = 0.0;
    for (int o = lo; o <= hi; o++) {
        int l2, h2;
        box_span(o, n, w, &l2, &h2);
        const double share = 1.0 / (hi - lo + 1) / (h2 - l2 + 1);
        for (int k = l2; k <= h2; k++) acc[k - a] += share;
    }
    for (int k = 0; k < t->len; k++) t->w[k] = (float)acc[k];
}

static int cmp_float(const void *x, const void *y) {
    const float u = *(const float *)x, v = *(const float *)y;
    return (u > v) - (u < v);
}

static int quality64(float m[64][64]) {
    int total = 0;
    for (int i = 0; i < 63; i++)
        for (int j = 0; j < 64; j++) total += abs((int)(((m[i][j] - m[i + 1][j]) * 100) / 255));
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 63; j++) total += abs((int)(((m[i][j] - m[i][j + 1]) * 100) / 255));
    total /= 90;
    return total > 100 ? 100 : total;
}

/* The hash's 16 words from the 64x64 luma: bit i*16+j set when DCT coefficient (i+1, j+1) is
 * above the median of the 256 (the 128th smallest, as PDQ's Torben median gives). */
static void hash64(float m[64][64], uint16_t words[16]) {
    float t[16][64], coef[16][16], sorted[256];
    for (int i = 0; i < 16; i++) {
        for (int j = 0; j < 64; j++) t[i][j] = 0.0f;
        for (int k = 0; k < 64; k++) {
            const float d = DCT[i][k];
            for (int j = 0; j < 64; j++) t[i][j] += d * m[k][j];
        }
    }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = 0.0f;
            for (int k = 0; k < 64; k++) s += t[i][k] * DCT[j][k];
            coef[i][j] = s;
        }
    memcpy(sorted, coef, sizeof sorted);
    qsort(sorted, 256, sizeof(float), cmp_float);
    const float median = sorted[127];
    memset(words, 0, 16 * sizeof(uint16_t));
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            if (coef[i][j] > median) words[(i * 16 + j) >> 4] |= (uint16_t)(1u << ((i * 16 + j) & 15));
}

/* One line of the plane as float. Limited range: clamped to 16-235 here, scaled to 0-255
 * once filtered (the scaling is affine and the filter's weights sum to 1, so this is the same
 * as scaling each pixel, and it keeps this loop to byte min/max and a conversion). */
static inline void line_luma(const uint8_t *restrict px, uint8_t *restrict clamped,
                             float *restrict out, int cols, int limited) {
    if (limited) {
        /* two plain loops: byte max/min, then the conversion, each vectorised */
        for (int c = 0; c < cols; c++) {
            const uint8_t y = px[c] > 16 ? px[c] : 16;
            clamped[c] = y < 235 ? y : 235;
        }
        px = clamped;
    }
    for (int c = 0; c < cols; c++) out[c] = (float)px[c];
}

/* Limited-range luma after filtering, scaled to full range. */
static inline float full_range(float v, int limited) {
    return limited ? (v - 16.0f) * (255.0f / 219.0f) : v;
}

typedef struct {
    const uint8_t *px;
    int rows, cols, stride, limited, k;
    float m[64][64];
    uint8_t *small;                       /* (rows / k) x (cols / k), or NULL */
} Job;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WIDE __attribute__((target_clones("avx2", "default")))  /* 8 floats a step, not 4 */
#else
#define WIDE
#endif

/* Returns 0, or -1 when out of memory. */
WIDE static int run(Job *job) {
    const int rows = job->rows, cols = job->cols, k = job->k;
    const int pdq = rows >= MIN_DIM && cols >= MIN_DIM;
    const int wr = window(cols), wc = window(rows);
    const int srows = k ? rows / k : 0, scols = k ? cols / k : 0;
    const size_t taps_r = 4 * (size_t)wr + 4, taps_c = 4 * (size_t)wc + 4;
    float *line = malloc((size_t)cols * sizeof(float));
    uint8_t *bytes = malloc((size_t)cols);
    float *v = calloc((size_t)64 * cols, sizeof(float));          /* the 64 kept rows, filtered */
    float *sum = k ? calloc((size_t)cols, sizeof(float)) : NULL;   /* k lines summed, for small */
    float *wbuf = malloc((64 * taps_r + 64 * taps_c) * sizeof(float));
    Tap tr[64], tc[64];
    if (line == NULL || bytes == NULL || v == NULL || wbuf == NULL || (k && sum == NULL)) {
        free(line); free(bytes); free(v); free(sum); free(wbuf);
        return -1;
    }
    if (pdq)
        for (int i = 0; i < 64; i++) {
            tr[i].w = wbuf + i * taps_r;
            tc[i].w = wbuf + 64 * taps_r + i * taps_c;
            tent((int)(((i + 0.5) * cols) / 64), cols, wr, &tr[i]);
            tent((int)(((i + 0.5) * rows) / 64), rows, wc, &tc[i]);
        }
    int first = 0;                         /* the first kept row whose taps may reach this line */
    for (int r = 0; r < rows; r++) {
        line_luma(job->px + (size_t)r * job->stride, bytes, line, cols, job->limited);
        if (pdq) {
            while (first < 64 && tc[first].start + tc[first].len <= r) first++;
            for (int i = first; i < 64 && tc[i].start <= r; i++) {
                const float w = tc[i].w[r - tc[i].start];
                float *restrict out = v + (size_t)i * cols;
                for (int c = 0; c < cols; c++) out[c] += w * line[c];
            }
        }
        if (k && r / k < srows) {
            for (int c = 0; c < cols; c++) sum[c] += line[c];
            if (r % k == k - 1) {
                uint8_t *restrict s = job->small + (size_t)(r / k) * scols;
                const float norm = 1.0f / (float)(k * k);
                for (int sc = 0; sc < scols; sc++) {
                    float t = 0.0f;
                    for (int q = 0; q < k; q++) t += sum[sc * k + q];
                    s[sc] = (uint8_t)(full_range(t * norm, job->limited) + 0.5f);
                }
                memset(sum, 0, (size_t)cols * sizeof(float));
            }
        }
    }
    if (pdq)
        for (int i = 0; i < 64; i++)
            for (int j = 0; j < 64; j++) {
                const float *in = v + (size_t)i * cols + tr[j].start;
                float t = 0.0f;
                for (int q = 0; q < tr[j].len; q++) t += tr[j].w[q] * in[q];
                job->m[i][j] = full_range(t, job->limited);
            }
    free(line); free(bytes); free(v); free(sum); free(wbuf);
    return 0;
}

static PyObject *luma_hashes(PyObject *self, PyObject *args) {
    Py_buffer view;
    int rows, cols, stride, limited, k;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*iiipi", &view, &rows, &cols, &stride, &limited, &k)) return NULL;
    if (rows < 1 || cols < 1 || stride < cols || k < 0 || rows > 65535 || cols > 65535 ||
        (Py_ssize_t)(rows - 1) * stride + cols > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "not rows lines of cols bytes (1 to 65535 each), stride "
                        "(>= cols) apart, within the buffer; or k < 0");
        return NULL;
    }
    const int srows = k ? rows / k : 0, scols = k ? cols / k : 0;
    PyObject *small = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)srows * scols);
    Job *job = calloc(1, sizeof(Job));
    if (small == NULL || job == NULL) {
        PyBuffer_Release(&view);
        Py_XDECREF(small);
        free(job);
        return PyErr_NoMemory();
    }
    *job = (Job){.px = view.buf, .rows = rows, .cols = cols, .stride = stride,
                 .limited = limited, .k = srows && scols ? k : 0,
                 .small = (uint8_t *)PyBytes_AS_STRING(small)};
    uint16_t words[16] = {0};
    int quality = 0, failed;
    Py_BEGIN_ALLOW_THREADS
    failed = run(job);
    if (!failed && rows >= MIN_DIM && cols >= MIN_DIM) {
        quality = quality64(job->m);
        hash64(job->m, words);
    }
    Py_END_ALLOW_THREADS
    free(job);
    PyBuffer_Release(&view);
    if (failed) {
        Py_DECREF(small);
        return PyErr_NoMemory();
    }
    char hex[65];
    for (int w = 15, o = 0; w >= 0; w--, o += 4) snprintf(hex + o, 5, "%04x", words[w]);
    PyObject *out = Py_BuildValue("(s#iOii)", hex, (Py_ssize_t)64, quality, small, srows, scols);
    Py_DECREF(small);
    return out;
}

static PyMethodDef methods[] = {
    {"luma_hashes", luma_hashes, METH_VARARGS,
     "luma_hashes(buffer, rows, cols, stride, limited, k) -> (hex, quality, small, srows, scols)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pdq", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pdq(void) {
    init_dct();
    return PyModule_Create(&module);
}
