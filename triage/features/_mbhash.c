/* Multi-buffer MD5 and SHA-1: the hashes of many byte strings at once, one string per SIMD lane.
 *
 * MD5 is a serial chain of dependent 32-bit steps, so one stream cannot go faster than about
 * 700 MB/s per core, and with SHA-1 it is most of a hash-only scan's CPU. Many files are
 * hashed in the same pass, though, and with AVX-512 sixteen of them advance together: each
 * step is the same instruction for sixteen independent strings, and each 64-byte block is
 * loaded and transposed once for both hashes. Output is byte-for-byte MD5 (RFC 1321) and
 * SHA-1 (FIPS 180-4); hashing.py checks this module against hashlib on import and falls back
 * to hashlib if it ever differs or the CPU has neither AVX-512 nor AVX2.
 *
 * hash_many(files, sha1=True, kernel=None) -> list[bytes]: `files` is a sequence; each item is a sequence
 * of buffer-protocol objects (bytes, memoryviews of a mapped image) whose concatenation is one
 * string. Returns, in order, its 16-byte MD5 followed (sha1=True) by its 20-byte SHA-1. The
 * GIL is released while hashing. Without AVX-512, eight lanes of AVX2 do the same.
 *
 * small_files(buffer, pieces_of, sizes, rules, head_bytes, kernel=None): the same for a group
 * of small files of one mapped image, each given by its (offset, length) pieces, with no
 * Python object made per piece; each comes back as (md5 hex, sha1 hex, content type), its
 * type read from its head by triage/filetype.py's SNIFF_RULES table.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../_sniffrules.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86 1
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
static const int S[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                          5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                          4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                          6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
static const uint32_t IV[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};

#define ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static inline uint32_t load_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);          /* x86 and arm64 are little-endian, as MD5 is */
    return v;
}

/* One 64-byte block into one state: RFC 1321 unrolled (tails, and CPUs without AVX-512). */
#define SF(b, c, d) ((((c) ^ (d)) & (b)) ^ (d))
#define SG(b, c, d) ((((b) ^ (c)) & (d)) ^ (c))
#define SH(b, c, d) ((b) ^ (c) ^ (d))
#define SI(b, c, d) ((c) ^ ((b) | ~(d)))
#define SSTEP(f, a, b, c, d, i, g) a = (b) + ROTL((a) + f(b, c, d) + K[i] + m[g], S[i])

/* The 64 steps, on a, b, c, d and message words m[]: scalars here, GCC vector types in the
   AVX2 kernel; both take the same expressions. */
#define R4(f, i, g0, g1, g2, g3) \
    SSTEP(f, a, b, c, d, i, g0); SSTEP(f, d, a, b, c, i + 1, g1); \
    SSTEP(f, c, d, a, b, i + 2, g2); SSTEP(f, b, c, d, a, i + 3, g3)
#define MD5_ROUNDS() \
    R4(SF, 0, 0, 1, 2, 3); R4(SF, 4, 4, 5, 6, 7); R4(SF, 8, 8, 9, 10, 11); R4(SF, 12, 12, 13, 14, 15); \
    R4(SG, 16, 1, 6, 11, 0); R4(SG, 20, 5, 10, 15, 4); R4(SG, 24, 9, 14, 3, 8); R4(SG, 28, 13, 2, 7, 12); \
    R4(SH, 32, 5, 8, 11, 14); R4(SH, 36, 1, 4, 7, 10); R4(SH, 40, 13, 0, 3, 6); R4(SH, 44, 9, 12, 15, 2); \
    R4(SI, 48, 0, 7, 14, 5); R4(SI, 52, 12, 3, 10, 1); R4(SI, 56, 8, 15, 6, 13); R4(SI, 60, 4, 11, 2, 9)

static void md5_block(uint32_t st[4], const uint8_t *p) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++) m[i] = load_le32(p + 4 * i);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    MD5_ROUNDS();
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
}

/* One 64-byte block into one SHA-1 state (FIPS 180-4), for tails. */
static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* The 80 rounds on a..e and the schedule w[80], for a type T (scalar or vector): four loops of
   twenty, one round function each, so no round branches. */
#define SHA1_LOOP(T, from, F, K_)                                                \
    for (int i = from; i < from + 20; i++) {                                     \
        T t_ = ROTL(a, 5) + (F) + e + (uint32_t)(K_) + w[i];                     \
        e = d; d = c; c = ROTL(b, 30); b = a; a = t_;                            \
    }
#define SHA1_ROUNDS(T)                                                           \
    SHA1_LOOP(T, 0, ((c ^ d) & b) ^ d, 0x5a827999)                               \
    SHA1_LOOP(T, 20, b ^ c ^ d, 0x6ed9eba1)                                      \
    SHA1_LOOP(T, 40, (b & c) | (d & (b | c)), 0x8f1bbcdc)                        \
    SHA1_LOOP(T, 60, b ^ c ^ d, 0xca62c1d6)

static void sha1_block(uint32_t st[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = load_be32(p + 4 * i);
    for (int i = 16; i < 80; i++) w[i] = ROTL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4];
    SHA1_ROUNDS(uint32_t);
    st[0] += a; st[1] += b; st[2] += c; st[3] += d; st[4] += e;
}

static const uint32_t SHA1_IV[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};

/* ---- one string, read through its pieces, 64 bytes at a time ---- */

typedef struct {
    const uint8_t *ptr;
    Py_ssize_t len;
} Piece;

typedef struct {
    Piece *pieces;
    Py_ssize_t npieces;
    Py_ssize_t total;
} Source;

typedef struct {
    Py_ssize_t file;           /* index of the string, -1 when idle */
    const Source *src;
    Py_ssize_t pi, off;        /* current piece and offset in it */
    Py_ssize_t left;           /* bytes of content not yet taken */
    int tail;                  /* final blocks still to give (-1: not built yet) */
    int tailpos;               /* which final block comes next */
    int last;                  /* the block just given is the string's last */
    /* the final blocks: MD5 ends with the bit length little-endian, SHA-1 big-endian */
    uint8_t buf[128] __attribute__((aligned(64)));
    uint8_t buf_be[128] __attribute__((aligned(64)));
} Lane;

static void lane_start(Lane *ln, Py_ssize_t file, const Source *src) {
    ln->file = file;
    ln->src = src;
    ln->pi = 0;
    ln->off = 0;
    ln->left = src->total;
    ln->tail = -1;
    ln->last = 0;
}

/* Copies `n` content bytes into `dst`, following the pieces. */
static void lane_copy(Lane *ln, uint8_t *dst, Py_ssize_t n) {
    while (n > 0) {
        const Piece *pc = &ln->src->pieces[ln->pi];
        Py_ssize_t k = pc->len - ln->off;
        if (k <= 0) { ln->pi++; ln->off = 0; continue; }
        if (k > n) k = n;
        memcpy(dst, pc->ptr + ln->off, (size_t)k);
        dst += k; n -= k; ln->off += k; ln->left -= k;
    }
}

/* The next 64-byte block of the lane's string, content then padding: the block for MD5,
   and in *be the same block for SHA-1 (they differ only in the final length field). */
static const uint8_t *lane_next(Lane *ln, const uint8_t **be) {
    if (ln->left >= 64) {
        while (ln->pi < ln->src->npieces && ln->off >= ln->src->pieces[ln->pi].len) {
            ln->pi++; ln->off = 0;
        }
        const Piece *pc = &ln->src->pieces[ln->pi];
        const uint8_t *p;
        if (pc->len - ln->off >= 64) {
            p = pc->ptr + ln->off;
            ln->off += 64;
            ln->left -= 64;
        } else {
            lane_copy(ln, ln->buf, 64);  /* a block across two pieces */
            p = ln->buf;
        }
        *be = p;
        return p;
    }
    if (ln->tail < 0) {                  /* build the final one or two blocks */
        Py_ssize_t r = ln->left;
        memset(ln->buf, 0, sizeof ln->buf);
        lane_copy(ln, ln->buf, r);
        ln->buf[r] = 0x80;
        int blocks = r < 56 ? 1 : 2;
        memcpy(ln->buf_be, ln->buf, sizeof ln->buf);
        uint64_t bits = (uint64_t)ln->src->total * 8u;
        for (int i = 0; i < 8; i++) {
            ln->buf[64 * blocks - 8 + i] = (uint8_t)(bits >> (8 * i));
            ln->buf_be[64 * blocks - 1 - i] = (uint8_t)(bits >> (8 * i));
        }
        ln->tail = blocks;
        ln->tailpos = 0;
    }
    const uint8_t *p = ln->buf + 64 * ln->tailpos;
    *be = ln->buf_be + 64 * ln->tailpos;
    ln->tailpos++;
    ln->tail--;
    ln->last = ln->tail == 0;
    return p;
}

typedef struct {
    uint32_t md5[4];
    uint32_t sha1[5];
} State;

static void state_init(State *s) {
    memcpy(s->md5, IV, sizeof s->md5);
    memcpy(s->sha1, SHA1_IV, sizeof s->sha1);
}

/* 16 bytes of MD5 (little-endian words), then 20 of SHA-1 (big-endian words) when asked. */
static void digest_bytes(const State *s, uint8_t *out, int sha1) {
    memcpy(out, s->md5, 16);
    if (sha1)
        for (int k = 0; k < 5; k++)
            for (int i = 0; i < 4; i++) out[16 + 4 * k + i] = (uint8_t)(s->sha1[k] >> (24 - 8 * i));
}

/* A lane goes on to the end of its string one block at a time (or a string is hashed whole). */
static void finish_scalar(Lane *ln, State *s, int sha1) {
    while (!ln->last) {
        const uint8_t *be;
        md5_block(s->md5, lane_next(ln, &be));
        if (sha1) sha1_block(s->sha1, be);
    }
}

#define MAXLANES 16

#ifdef HAVE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw")))

/* Sixteen 64-byte blocks (one per lane) as sixteen vectors of message word w across lanes. */
AVX512 static inline void transpose16(const uint8_t *const p[MAXLANES], __m512i m[16]) {
    __m512i r[16], t[16], u[16];
    for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_si512((const void *)p[j]);
    for (int j = 0; j < 16; j += 2) {
        t[j] = _mm512_unpacklo_epi32(r[j], r[j + 1]);
        t[j + 1] = _mm512_unpackhi_epi32(r[j], r[j + 1]);
    }
    /* u[4g + k]: 128-bit chunk q holds word 4q + k of lanes 4g..4g+3 */
    for (int g = 0; g < 4; g++) {
        __m512i t0 = t[4 * g], t1 = t[4 * g + 1], t2 = t[4 * g + 2], t3 = t[4 * g + 3];
        u[4 * g + 0] = _mm512_unpacklo_epi64(t0, t2);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
    }
    for (int k = 0; k < 4; k++) {
        __m512i a = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x44);
        __m512i b = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xEE);
        __m512i c = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x44);
        __m512i d = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xEE);
        m[k] = _mm512_shuffle_i32x4(a, c, 0x88);
        m[4 + k] = _mm512_shuffle_i32x4(a, c, 0xDD);
        m[8 + k] = _mm512_shuffle_i32x4(b, d, 0x88);
        m[12 + k] = _mm512_shuffle_i32x4(b, d, 0xDD);
    }
}

#define STEP(F, a, b, c, d, i, g)                                                         \
    do {                                                                                  \
        __m512i f_ = _mm512_ternarylogic_epi32(b, c, d, F);                               \
        __m512i s_ = _mm512_add_epi32(_mm512_add_epi32(a, f_),                            \
                                      _mm512_add_epi32(m[g], _mm512_set1_epi32((int)K[i]))); \
        a = _mm512_add_epi32(b, _mm512_rolv_epi32(s_, _mm512_set1_epi32(S[i])));          \
    } while (0)

AVX512 static void md5x16(__m512i st[4], const __m512i m[16]) {
    __m512i a = st[0], b = st[1], c = st[2], d = st[3];
    for (int i = 0; i < 64; i += 4) {
        int g0, g1, g2, g3;
        if (i < 16) { g0 = i; g1 = i + 1; g2 = i + 2; g3 = i + 3; }
        else if (i < 32) { g0 = (5 * i + 1) & 15; g1 = (5 * i + 6) & 15; g2 = (5 * i + 11) & 15; g3 = (5 * i + 16) & 15; }
        else if (i < 48) { g0 = (3 * i + 5) & 15; g1 = (3 * i + 8) & 15; g2 = (3 * i + 11) & 15; g3 = (3 * i + 14) & 15; }
        else { g0 = (7 * i) & 15; g1 = (7 * i + 7) & 15; g2 = (7 * i + 14) & 15; g3 = (7 * i + 21) & 15; }
        /* ternary-logic tables: F = b?c:d (0xCA), G = d?b:c (0xE4), H = b^c^d (0x96),
           I = c^(b|~d) (0x39) */
        if (i < 16) {
            STEP(0xCA, a, b, c, d, i, g0); STEP(0xCA, d, a, b, c, i + 1, g1);
            STEP(0xCA, c, d, a, b, i + 2, g2); STEP(0xCA, b, c, d, a, i + 3, g3);
        } else if (i < 32) {
            STEP(0xE4, a, b, c, d, i, g0); STEP(0xE4, d, a, b, c, i + 1, g1);
            STEP(0xE4, c, d, a, b, i + 2, g2); STEP(0xE4, b, c, d, a, i + 3, g3);
        } else if (i < 48) {
            STEP(0x96, a, b, c, d, i, g0); STEP(0x96, d, a, b, c, i + 1, g1);
            STEP(0x96, c, d, a, b, i + 2, g2); STEP(0x96, b, c, d, a, i + 3, g3);
        } else {
            STEP(0x39, a, b, c, d, i, g0); STEP(0x39, d, a, b, c, i + 1, g1);
            STEP(0x39, c, d, a, b, i + 2, g2); STEP(0x39, b, c, d, a, i + 3, g3);
        }
    }
    st[0] = _mm512_add_epi32(st[0], a);
    st[1] = _mm512_add_epi32(st[1], b);
    st[2] = _mm512_add_epi32(st[2], c);
    st[3] = _mm512_add_epi32(st[3], d);
}

/* SHA-1 rounds; e and the others rotate names instead of values (unrolled by five). */
#define SROUND(F, K_, a, b, c, d, e, wt)                                                   \
    do {                                                                                  \
        e = _mm512_add_epi32(_mm512_add_epi32(e, _mm512_rol_epi32(a, 5)),                 \
                             _mm512_add_epi32(_mm512_ternarylogic_epi32(b, c, d, F),      \
                                              _mm512_add_epi32(wt, K_)));                  \
        b = _mm512_rol_epi32(b, 30);                                                      \
    } while (0)

AVX512 static inline __m512i sched(__m512i w[16], int t) {
    /* w[t] = rotl1(w[t-3] ^ w[t-8] ^ w[t-14] ^ w[t-16]), in a ring of sixteen */
    __m512i x = _mm512_ternarylogic_epi32(w[(t - 3) & 15], w[(t - 8) & 15], w[(t - 14) & 15], 0x96);
    x = _mm512_rol_epi32(_mm512_xor_si512(x, w[t & 15]), 1);
    w[t & 15] = x;
    return x;
}

AVX512 static void sha1x16(__m512i st[5], const __m512i m[16], const __m512i be_bytes) {
    __m512i w[16];
    for (int i = 0; i < 16; i++) w[i] = _mm512_shuffle_epi8(m[i], be_bytes);
    __m512i a = st[0], b = st[1], c = st[2], d = st[3], e = st[4];
    const __m512i k0 = _mm512_set1_epi32(0x5a827999), k1 = _mm512_set1_epi32(0x6ed9eba1),
                  k2 = _mm512_set1_epi32((int)0x8f1bbcdc), k3 = _mm512_set1_epi32((int)0xca62c1d6);
    int t = 0;
#define FIVE(F, K_, W)                                   \
    SROUND(F, K_, a, b, c, d, e, W(t)); t++;             \
    SROUND(F, K_, e, a, b, c, d, W(t)); t++;             \
    SROUND(F, K_, d, e, a, b, c, W(t)); t++;             \
    SROUND(F, K_, c, d, e, a, b, W(t)); t++;             \
    SROUND(F, K_, b, c, d, e, a, W(t)); t++
#define W(t_) ((t_) < 16 ? w[(t_)] : sched(w, (t_)))
    /* Ch = b?c:d (0xCA), parity (0x96), Maj (0xE8) */
    for (int r = 0; r < 4; r++) { FIVE(0xCA, k0, W); }
    for (int r = 0; r < 4; r++) { FIVE(0x96, k1, W); }
    for (int r = 0; r < 4; r++) { FIVE(0xE8, k2, W); }
    for (int r = 0; r < 4; r++) { FIVE(0x96, k3, W); }
#undef FIVE
#undef W
    st[0] = _mm512_add_epi32(st[0], a);
    st[1] = _mm512_add_epi32(st[1], b);
    st[2] = _mm512_add_epi32(st[2], c);
    st[3] = _mm512_add_epi32(st[3], d);
    st[4] = _mm512_add_epi32(st[4], e);
}

/* One block step of every lane: states in plain arrays [word][lane], blocks in p (for MD5) and
   pb (for SHA-1: the same block, except in a string's final blocks). */
AVX512 static void step_avx512(uint32_t md5[4][MAXLANES], uint32_t sha[5][MAXLANES],
                               const uint8_t *const p[MAXLANES], const uint8_t *const pb[MAXLANES],
                               int sha1, int tails) {
    const __m512i be_bytes = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    __m512i st[5], m[16];
    for (int k = 0; k < 4; k++) st[k] = _mm512_load_si512((const void *)md5[k]);
    transpose16(p, m);
    md5x16(st, m);
    for (int k = 0; k < 4; k++) _mm512_store_si512((void *)md5[k], st[k]);
    if (!sha1) return;
    if (tails) transpose16(pb, m);
    for (int k = 0; k < 5; k++) st[k] = _mm512_load_si512((const void *)sha[k]);
    sha1x16(st, m, be_bytes);
    for (int k = 0; k < 5; k++) _mm512_store_si512((void *)sha[k], st[k]);
}

/* ---- AVX2: eight lanes, for CPUs without AVX-512 (GCC vector types carry the rounds) ---- */
#define AVX2 __attribute__((target("avx2")))
typedef uint32_t v8u __attribute__((vector_size(32)));

/* Eight 64-byte blocks as sixteen vectors of message word w across the eight lanes. */
AVX2 static inline void transpose8(const uint8_t *const p[MAXLANES], v8u m[16]) {
    for (int h = 0; h < 2; h++) {
        __m256i r[8];
        for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_si256((const __m256i *)(p[j] + 32 * h));
        __m256i t[8], u[8];
        for (int j = 0; j < 8; j += 2) {
            t[j] = _mm256_unpacklo_epi32(r[j], r[j + 1]);
            t[j + 1] = _mm256_unpackhi_epi32(r[j], r[j + 1]);
        }
        for (int g = 0; g < 8; g += 4) {   /* u[g + k]: word k (low half), k + 4 (high half) */
            u[g + 0] = _mm256_unpacklo_epi64(t[g], t[g + 2]);
            u[g + 1] = _mm256_unpackhi_epi64(t[g], t[g + 2]);
            u[g + 2] = _mm256_unpacklo_epi64(t[g + 1], t[g + 3]);
            u[g + 3] = _mm256_unpackhi_epi64(t[g + 1], t[g + 3]);
        }
        for (int k = 0; k < 4; k++) {
            m[8 * h + k] = (v8u)_mm256_permute2x128_si256(u[k], u[4 + k], 0x20);
            m[8 * h + 4 + k] = (v8u)_mm256_permute2x128_si256(u[k], u[4 + k], 0x31);
        }
    }
}

AVX2 static void step_avx2(uint32_t md5[4][MAXLANES], uint32_t sha[5][MAXLANES],
                           const uint8_t *const p[MAXLANES], const uint8_t *const pb[MAXLANES],
                           int sha1, int tails) {
    const __m256i be_bytes = _mm256_set_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203,
                                              0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    v8u m[16];
    transpose8(p, m);
    {
        v8u a, b, c, d;
        memcpy(&a, md5[0], 32); memcpy(&b, md5[1], 32); memcpy(&c, md5[2], 32); memcpy(&d, md5[3], 32);
        v8u a0 = a, b0 = b, c0 = c, d0 = d;
        MD5_ROUNDS();
        a += a0; b += b0; c += c0; d += d0;
        memcpy(md5[0], &a, 32); memcpy(md5[1], &b, 32); memcpy(md5[2], &c, 32); memcpy(md5[3], &d, 32);
    }
    if (!sha1) return;
    if (tails) transpose8(pb, m);
    v8u w[80];
    for (int i = 0; i < 16; i++) w[i] = (v8u)_mm256_shuffle_epi8((__m256i)m[i], be_bytes);
    for (int i = 16; i < 80; i++) w[i] = ROTL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    v8u a, b, c, d, e;
    memcpy(&a, sha[0], 32); memcpy(&b, sha[1], 32); memcpy(&c, sha[2], 32); memcpy(&d, sha[3], 32);
    memcpy(&e, sha[4], 32);
    v8u a0 = a, b0 = b, c0 = c, d0 = d, e0 = e;
    SHA1_ROUNDS(v8u);
    a += a0; b += b0; c += c0; d += d0; e += e0;
    memcpy(sha[0], &a, 32); memcpy(sha[1], &b, 32); memcpy(sha[2], &c, 32); memcpy(sha[3], &d, 32);
    memcpy(sha[4], &e, 32);
}
#endif

typedef void (*StepFn)(uint32_t md5[4][MAXLANES], uint32_t sha[5][MAXLANES],
                       const uint8_t *const p[MAXLANES], const uint8_t *const pb[MAXLANES],
                       int sha1, int tails);

/* Hashes every source, `nl` lanes at a time through `step`; when two or fewer strings are
   left, each finishes in the scalar loop (a nearly empty vector costs as much as a full one). */
static void hash_many_lanes(int nl, StepFn step, const Source *src, Py_ssize_t n, uint8_t *out,
                            size_t width, int sha1) {
    static const uint8_t zero[64] __attribute__((aligned(64))) = {0};
    Lane lanes[MAXLANES];
    uint32_t md5[4][MAXLANES] __attribute__((aligned(64)));
    uint32_t sha[5][MAXLANES] __attribute__((aligned(64)));
    const uint8_t *p[MAXLANES], *pb[MAXLANES];
    Py_ssize_t next = 0;
    int active = 0;
    for (int j = 0; j < MAXLANES; j++) {
        for (int k = 0; k < 4; k++) md5[k][j] = IV[k];
        for (int k = 0; k < 5; k++) sha[k][j] = SHA1_IV[k];
        lanes[j].file = -1;
        p[j] = pb[j] = zero;
        if (j < nl && next < n) { lane_start(&lanes[j], next, &src[next]); next++; active++; }
    }
    while (active > 2 || (active > 0 && next < n)) {
        int tails = 0, done = 0;
        for (int j = 0; j < nl; j++) {
            if (lanes[j].file >= 0) {
                p[j] = lane_next(&lanes[j], &pb[j]);
                tails |= pb[j] != p[j];
            } else {
                p[j] = pb[j] = zero;
            }
        }
        step(md5, sha, p, pb, sha1, tails);
        for (int j = 0; j < nl; j++) {
            if (lanes[j].file < 0 || !lanes[j].last) continue;
            done++;
            State s;
            for (int k = 0; k < 4; k++) s.md5[k] = md5[k][j];
            for (int k = 0; k < 5; k++) s.sha1[k] = sha[k][j];
            digest_bytes(&s, out + width * (size_t)lanes[j].file, sha1);
            for (int k = 0; k < 4; k++) md5[k][j] = IV[k];
            for (int k = 0; k < 5; k++) sha[k][j] = SHA1_IV[k];
            if (next < n) {
                lane_start(&lanes[j], next, &src[next]);
                next++;
            } else {
                lanes[j].file = -1;
                active--;
            }
        }
    }
    for (int j = 0; j < nl; j++) {
        if (lanes[j].file < 0) continue;
        State s;
        for (int k = 0; k < 4; k++) s.md5[k] = md5[k][j];
        for (int k = 0; k < 5; k++) s.sha1[k] = sha[k][j];
        finish_scalar(&lanes[j], &s, sha1);
        digest_bytes(&s, out + width * (size_t)lanes[j].file, sha1);
    }
}

static void hash_many_scalar(const Source *src, Py_ssize_t n, uint8_t *out, size_t width,
                             int sha1) {
    Lane ln;
    for (Py_ssize_t i = 0; i < n; i++) {
        State s;
        state_init(&s);
        lane_start(&ln, i, &src[i]);
        finish_scalar(&ln, &s, sha1);
        digest_bytes(&s, out + width * (size_t)i, sha1);
    }
}

enum { KERNEL_SCALAR = 0, KERNEL_AVX2 = 1, KERNEL_AVX512 = 2 };

/* The widest kernel this CPU runs. */
static int best_kernel(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
        return KERNEL_AVX512;
    if (__builtin_cpu_supports("avx2")) return KERNEL_AVX2;
#endif
    return KERNEL_SCALAR;
}

static const char *const KERNEL_NAMES[] = {"scalar", "avx2", "avx512"};

/* The kernel called `name` (NULL: the widest this CPU runs); -1 with ValueError for one it
   does not run. */
static int kernel_named(const char *name) {
    int kernel = best_kernel();
    if (name == NULL) return kernel;
    for (int i = 0; i < 3; i++)
        if (strcmp(name, KERNEL_NAMES[i]) == 0 && i <= kernel) return i;
    PyErr_Format(PyExc_ValueError, "kernel %s: not one this CPU runs (best: %s)", name,
                 KERNEL_NAMES[kernel]);
    return -1;
}

/* Every source through `kernel`: `width` bytes of digest each (MD5, then SHA-1 when asked). */
static void hash_sources(int kernel, const Source *src, Py_ssize_t n, uint8_t *out,
                         size_t width, int sha1) {
#ifdef HAVE_X86
    if (kernel == KERNEL_AVX512) hash_many_lanes(16, step_avx512, src, n, out, width, sha1);
    else if (kernel == KERNEL_AVX2) hash_many_lanes(8, step_avx2, src, n, out, width, sha1);
    else hash_many_scalar(src, n, out, width, sha1);
#else
    (void)kernel;
    hash_many_scalar(src, n, out, width, sha1);
#endif
}

static PyObject *py_hash_many(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"files", "sha1", "kernel", NULL};
    PyObject *files;
    int sha1 = 1;
    const char *name = NULL;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pz", kwlist, &files, &sha1, &name))
        return NULL;
    int kernel = kernel_named(name);
    if (kernel < 0) return NULL;
    PyObject *seq = PySequence_Fast(files, "hash_many expects a sequence of sequences of buffers");
    if (!seq) return NULL;
    size_t width = sha1 ? 36 : 16;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_ssize_t nbuf = 0, got = 0;
    PyObject **inner = PyMem_Calloc((size_t)(n ? n : 1), sizeof(PyObject *));
    Source *src = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Source));
    uint8_t *out = PyMem_Calloc((size_t)(n ? n : 1), width);
    Py_buffer *views = NULL;
    Piece *pieces = NULL;
    PyObject *result = NULL;
    if (!inner || !src || !out) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        inner[i] = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, i),
                                   "each file must be a sequence of buffers");
        if (!inner[i]) goto done;
        nbuf += PySequence_Fast_GET_SIZE(inner[i]);
    }
    views = PyMem_Calloc((size_t)(nbuf ? nbuf : 1), sizeof(Py_buffer));
    pieces = PyMem_Calloc((size_t)(nbuf ? nbuf : 1), sizeof(Piece));
    if (!views || !pieces) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t k = PySequence_Fast_GET_SIZE(inner[i]);
        src[i].pieces = pieces + got;
        src[i].npieces = k;
        src[i].total = 0;
        for (Py_ssize_t j = 0; j < k; j++) {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(inner[i], j), &views[got],
                                   PyBUF_SIMPLE) < 0)
                goto done;
            pieces[got].ptr = views[got].buf;
            pieces[got].len = views[got].len;
            src[i].total += views[got].len;
            got++;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    hash_sources(kernel, src, n, out, width, sha1);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (!result) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)out + width * (size_t)i,
                                                (Py_ssize_t)width);
        if (!b) { Py_CLEAR(result); goto done; }
        PyList_SET_ITEM(result, i, b);
    }
done:
    for (Py_ssize_t q = 0; q < got; q++) PyBuffer_Release(&views[q]);
    if (inner) for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(inner[i]);
    PyMem_Free(inner);
    PyMem_Free(src);
    PyMem_Free(out);
    PyMem_Free(views);
    PyMem_Free(pieces);
    Py_DECREF(seq);
    return result;
}

/* small_files: a group of small files of one mapped image, each given by its pieces, hashed
   and sniffed without a Python object per piece. Sniffing reads `rules`, the content-type
   table of triage/filetype.py (SNIFF_RULES; ../_sniffrules.h). */
static int index_by_size_desc(const void *a, const void *b) {
    const Source *x = *(const Source *const *)a, *y = *(const Source *const *)b;
    if (x->total != y->total) return x->total < y->total ? 1 : -1;
    return x < y ? -1 : x > y;
}

static PyObject *hex_str(const uint8_t *d, int n) {
    static const char digits[] = "0123456789abcdef";
    PyObject *s = PyUnicode_New(2 * n, 127);
    if (!s) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(s);
    for (int i = 0; i < n; i++) {
        o[2 * i] = (Py_UCS1)digits[d[i] >> 4];
        o[2 * i + 1] = (Py_UCS1)digits[d[i] & 15];
    }
    return s;
}

static PyObject *py_small_files(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"buffer", "pieces_of", "sizes", "rules", "head_bytes", "kernel",
                             NULL};
    PyObject *buffer, *pieces_arg, *sizes_arg, *rules_arg;
    Py_ssize_t head_bytes;
    const char *name = NULL;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOn|z", kwlist, &buffer, &pieces_arg,
                                     &sizes_arg, &rules_arg, &head_bytes, &name))
        return NULL;
    int kernel = kernel_named(name);
    if (kernel < 0) return NULL;
    if (head_bytes < 0 || head_bytes > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "head_bytes out of range");
        return NULL;
    }
    Py_buffer whole;
    if (PyObject_GetBuffer(buffer, &whole, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *seq = NULL, *sizes = NULL, *result = NULL, *none = NULL;
    SniffTable table = {0};
    Source *src = NULL, **order = NULL, *packed = NULL;
    Piece *pieces = NULL;
    uint8_t *out = NULL, *head = NULL;
    Py_ssize_t n = 0, npieces = 0;
    seq = PySequence_Fast(pieces_arg, "pieces_of must be a sequence");
    sizes = seq ? PySequence_Fast(sizes_arg, "sizes must be a sequence") : NULL;
    if (!sizes || sniff_table_load(&table, rules_arg) < 0) goto done;
    n = PySequence_Fast_GET_SIZE(seq);
    if (PySequence_Fast_GET_SIZE(sizes) != n) {
        PyErr_SetString(PyExc_ValueError, "one size for each file");
        goto done;
    }
    none = PyUnicode_FromStringAndSize("", 0);
    if (!none) goto done;
    /* the files: each piece inside the buffer, their total the declared size (else None) */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ps = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t k = PyTuple_Check(ps) ? PyTuple_GET_SIZE(ps)
                     : PyList_Check(ps) ? PyList_GET_SIZE(ps) : -1;
        if (k < 0) { PyErr_SetString(PyExc_TypeError, "a file's pieces are a tuple or list"); goto done; }
        npieces += k;
    }
    src = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Source));
    packed = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Source));
    order = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Source *));
    pieces = PyMem_Calloc((size_t)(npieces ? npieces : 1), sizeof(Piece));
    out = PyMem_Calloc((size_t)(n ? n : 1), 36);
    head = PyMem_Malloc((size_t)(head_bytes ? head_bytes : 1));
    if (!src || !packed || !order || !pieces || !out || !head) { PyErr_NoMemory(); goto done; }
    Py_ssize_t used = 0, ok = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ps = PySequence_Fast_GET_ITEM(seq, i);
        PyObject **items = PySequence_Fast_ITEMS(ps);
        Py_ssize_t k = PySequence_Fast_GET_SIZE(ps);
        long long size = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(sizes, i));
        if (size == -1 && PyErr_Occurred()) goto done;
        int good = k > 0;
        src[i].pieces = pieces + used;
        src[i].total = 0;
        for (Py_ssize_t j = 0; j < k && good; j++) {
            PyObject *pc = items[j];
            if (!PyTuple_Check(pc) || PyTuple_GET_SIZE(pc) != 2) { good = 0; break; }
            long long start = PyLong_AsLongLong(PyTuple_GET_ITEM(pc, 0));
            long long len = PyLong_AsLongLong(PyTuple_GET_ITEM(pc, 1));
            if (PyErr_Occurred()) { PyErr_Clear(); good = 0; break; }
            /* the bounds Source.views keeps: a piece of some bytes, all inside the image */
            if (start < 0 || len <= 0 || start > (long long)whole.len ||
                len > (long long)whole.len - start) { good = 0; break; }
            pieces[used + j].ptr = (const uint8_t *)whole.buf + start;
            pieces[used + j].len = (Py_ssize_t)len;
            src[i].total += (Py_ssize_t)len;
        }
        if (good && src[i].total == size) {
            src[i].npieces = k;
            used += k;
            order[ok++] = &src[i];
        } else {
            src[i].npieces = -1;                    /* not read here: None */
        }
    }
    /* longest first (lanes are handed out in order: the short ones fill in around the long) */
    qsort(order, (size_t)ok, sizeof(Source *), index_by_size_desc);
    for (Py_ssize_t q = 0; q < ok; q++) packed[q] = *order[q];
    Py_BEGIN_ALLOW_THREADS
    hash_sources(kernel, packed, ok, out, 36, 1);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (!result) goto done;
    for (Py_ssize_t q = 0; q < ok; q++) {
        const Source *s = &packed[q];
        Py_ssize_t hn = s->total < head_bytes ? s->total : head_bytes;
        const uint8_t *h = s->pieces[0].ptr;
        if (s->pieces[0].len < hn) {             /* the head spans pieces */
            Py_ssize_t got = 0;
            for (Py_ssize_t j = 0; got < hn; j++) {
                Py_ssize_t take = s->pieces[j].len < hn - got ? s->pieces[j].len : hn - got;
                memcpy(head + got, s->pieces[j].ptr, (size_t)take);
                got += take;
            }
            h = head;
        }
        PyObject *mime = sniff_table_match(&table, h, hn);
        if (mime == NULL) mime = none;
        PyObject *md5 = hex_str(out + 36 * (size_t)q, 16);
        PyObject *sha1 = md5 ? hex_str(out + 36 * (size_t)q + 16, 20) : NULL;
        PyObject *t = sha1 ? PyTuple_New(3) : NULL;
        if (!t) { Py_XDECREF(md5); Py_XDECREF(sha1); Py_CLEAR(result); goto done; }
        Py_INCREF(mime);
        PyTuple_SET_ITEM(t, 0, md5);
        PyTuple_SET_ITEM(t, 1, sha1);
        PyTuple_SET_ITEM(t, 2, mime);
        PyList_SET_ITEM(result, order[q] - src, t);
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (src[i].npieces < 0) { Py_INCREF(Py_None); PyList_SET_ITEM(result, i, Py_None); }
done:
    PyBuffer_Release(&whole);
    Py_XDECREF(seq);
    Py_XDECREF(sizes);
    Py_XDECREF(none);
    sniff_table_free(&table);
    PyMem_Free(src);
    PyMem_Free(packed);
    PyMem_Free(order);
    PyMem_Free(pieces);
    PyMem_Free(out);
    PyMem_Free(head);
    return result;
}

static PyObject *py_best(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(KERNEL_NAMES[best_kernel()]);
}

static PyMethodDef methods[] = {
    {"hash_many", (PyCFunction)(void (*)(void))py_hash_many, METH_VARARGS | METH_KEYWORDS,
     "hash_many(files, sha1=True, kernel=None) -> list of bytes, one per file: its 16-byte MD5, "
     "then its 20-byte SHA-1 when sha1 is true. Each file is a sequence of buffers hashed as "
     "one string. kernel: 'avx512' (16 lanes), 'avx2' (8 lanes) or 'scalar'; default the "
     "widest this CPU runs."},
    {"small_files", (PyCFunction)(void (*)(void))py_small_files, METH_VARARGS | METH_KEYWORDS,
     "small_files(buffer, pieces_of, sizes, rules, head_bytes, kernel=None) -> list, one item "
     "per file: (md5 hex, sha1 hex, content type) or None. A file is the concatenation of its "
     "pieces, (offset, length) each, of `buffer` (a mapped image); None when a piece is empty "
     "or outside the buffer, or the pieces do not add up to the file's size. Its type is the "
     "mime of the first of `rules` ((mime, ((offset, bytes), ...)) each) all of whose parts "
     "match its first `head_bytes` bytes, \"\" when none does."},
    {"best_kernel", py_best, METH_NOARGS,
     "The widest kernel this CPU runs: 'avx512', 'avx2' or 'scalar'."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mbhash",
                                    "Multi-buffer MD5 and SHA-1 (many strings per pass).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__mbhash(void) { return PyModule_Create(&module); }
