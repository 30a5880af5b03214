/* Multi-buffer MD5 and SHA-1: the hashes of many byte strings at once, one string per SIMD lane.
 *
 * MD5 is a serial chain of dependent 32-bit steps, so one stream cannot go faster than about
 * 700 MB/s per core, and with SHA-1 it is most of a hash-only scan's CPU. Many files are
 * hashed in the same pass, though, and with AVX-512 sixteen of them advance together: each
 * step is the same instruction for sixteen independent strings, and each 64-byte block is
 * loaded and transposed once for both hashes. Output is byte-for-byte MD5 (RFC 1321) and
 * SHA-1 (FIPS 180-4); hashing.py checks this module against hashlib on import and falls back
 * to hashlib if it ever differs or the CPU lacks AVX-512.
 *
 * hash_many(files, sha1=True) -> list[bytes]: `files` is a sequence; each item is a sequence
 * of buffer-protocol objects (bytes, memoryviews of a mapped image) whose concatenation is one
 * string. Returns, in order, its 16-byte MD5 followed (sha1=True) by its 20-byte SHA-1. The
 * GIL is released while hashing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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

static void md5_block(uint32_t st[4], const uint8_t *p) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++) m[i] = load_le32(p + 4 * i);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
#define R4(f, i, g0, g1, g2, g3) \
    SSTEP(f, a, b, c, d, i, g0); SSTEP(f, d, a, b, c, i + 1, g1); \
    SSTEP(f, c, d, a, b, i + 2, g2); SSTEP(f, b, c, d, a, i + 3, g3)
    R4(SF, 0, 0, 1, 2, 3); R4(SF, 4, 4, 5, 6, 7); R4(SF, 8, 8, 9, 10, 11); R4(SF, 12, 12, 13, 14, 15);
    R4(SG, 16, 1, 6, 11, 0); R4(SG, 20, 5, 10, 15, 4); R4(SG, 24, 9, 14, 3, 8); R4(SG, 28, 13, 2, 7, 12);
    R4(SH, 32, 5, 8, 11, 14); R4(SH, 36, 1, 4, 7, 10); R4(SH, 40, 13, 0, 3, 6); R4(SH, 44, 9, 12, 15, 2);
    R4(SI, 48, 0, 7, 14, 5); R4(SI, 52, 12, 3, 10, 1); R4(SI, 56, 8, 15, 6, 13); R4(SI, 60, 4, 11, 2, 9);
#undef R4
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
}

/* One 64-byte block into one SHA-1 state (FIPS 180-4), for tails. */
static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void sha1_block(uint32_t st[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++) w[i] = load_be32(p + 4 * i);
    for (int i = 16; i < 80; i++) w[i] = ROTL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
        else { f = b ^ c ^ d; k = 0xca62c1d6; }
        uint32_t t = ROTL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROTL(b, 30); b = a; a = t;
    }
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

#ifdef HAVE_X86
#define LANES 16
#define AVX512 __attribute__((target("avx512f,avx512bw")))

/* Sixteen 64-byte blocks (one per lane) as sixteen vectors of message word w across lanes. */
AVX512 static inline void transpose16(const uint8_t *const p[LANES], __m512i m[16]) {
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

/* Hashes every source, sixteen at a time; when two or fewer strings are left, each finishes in
   the scalar loop (a nearly empty vector costs as much as a full one). */
AVX512 static void hash_many_avx512(const Source *src, Py_ssize_t n, uint8_t *out, size_t width,
                                    int sha1) {
    static const uint8_t zero[64] __attribute__((aligned(64))) = {0};
    const __m512i be_bytes = _mm512_set4_epi32(0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203);
    Lane lanes[LANES];
    __m512i st[4], sh[5];
    for (int k = 0; k < 4; k++) st[k] = _mm512_set1_epi32((int)IV[k]);
    for (int k = 0; k < 5; k++) sh[k] = _mm512_set1_epi32((int)SHA1_IV[k]);
    Py_ssize_t next = 0;
    int active = 0;
    for (int j = 0; j < LANES; j++) {
        if (next < n) { lane_start(&lanes[j], next, &src[next]); next++; active++; }
        else lanes[j].file = -1;
    }
    const uint8_t *p[LANES], *pb[LANES];
    uint32_t words[4][LANES] __attribute__((aligned(64)));
    uint32_t swords[5][LANES] __attribute__((aligned(64)));
    __m512i m[16];
    while (active > 2 || (active > 0 && next < n)) {
        int tails = 0;
        for (int j = 0; j < LANES; j++) {
            if (lanes[j].file >= 0) {
                p[j] = lane_next(&lanes[j], &pb[j]);
                tails |= (pb[j] != p[j]) << j;
            } else {
                p[j] = pb[j] = zero;
            }
        }
        transpose16(p, m);
        md5x16(st, m);
        if (sha1) {
            if (tails) transpose16(pb, m);    /* final blocks: SHA-1's length is big-endian */
            sha1x16(sh, m, be_bytes);
        }
        int done = 0;
        for (int j = 0; j < LANES; j++) done |= (lanes[j].file >= 0 && lanes[j].last) << j;
        if (!done) continue;
        for (int k = 0; k < 4; k++) _mm512_store_si512((void *)words[k], st[k]);
        for (int k = 0; k < 5; k++) _mm512_store_si512((void *)swords[k], sh[k]);
        for (int j = 0; j < LANES; j++) {
            if (!(done >> j & 1)) continue;
            State s;
            for (int k = 0; k < 4; k++) s.md5[k] = words[k][j];
            for (int k = 0; k < 5; k++) s.sha1[k] = swords[k][j];
            digest_bytes(&s, out + width * (size_t)lanes[j].file, sha1);
            if (next < n) {
                lane_start(&lanes[j], next, &src[next]);
                next++;
            } else {
                lanes[j].file = -1;
                active--;
            }
            for (int k = 0; k < 4; k++) words[k][j] = IV[k];
            for (int k = 0; k < 5; k++) swords[k][j] = SHA1_IV[k];
        }
        for (int k = 0; k < 4; k++) st[k] = _mm512_load_si512((const void *)words[k]);
        for (int k = 0; k < 5; k++) sh[k] = _mm512_load_si512((const void *)swords[k]);
    }
    if (active) {
        for (int k = 0; k < 4; k++) _mm512_store_si512((void *)words[k], st[k]);
        for (int k = 0; k < 5; k++) _mm512_store_si512((void *)swords[k], sh[k]);
        for (int j = 0; j < LANES; j++) {
            if (lanes[j].file < 0) continue;
            State s;
            for (int k = 0; k < 4; k++) s.md5[k] = words[k][j];
            for (int k = 0; k < 5; k++) s.sha1[k] = swords[k][j];
            finish_scalar(&lanes[j], &s, sha1);
            digest_bytes(&s, out + width * (size_t)lanes[j].file, sha1);
        }
    }
}
#endif

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

static int simd_available(void) {
#ifdef HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

static PyObject *py_hash_many(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"files", "sha1", "simd", NULL};
    PyObject *files;
    int sha1 = 1, simd = 1;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|pp", kwlist, &files, &sha1, &simd))
        return NULL;
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
#ifdef HAVE_X86
    if (simd && simd_available()) hash_many_avx512(src, n, out, width, sha1);
    else hash_many_scalar(src, n, out, width, sha1);
#else
    hash_many_scalar(src, n, out, width, sha1);
#endif
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

static PyObject *py_simd(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyBool_FromLong(simd_available());
}

static PyMethodDef methods[] = {
    {"hash_many", (PyCFunction)(void (*)(void))py_hash_many, METH_VARARGS | METH_KEYWORDS,
     "hash_many(files, sha1=True, simd=True) -> list of bytes, one per file: its 16-byte MD5, "
     "then its 20-byte SHA-1 when sha1 is true. Each file is a sequence of buffers hashed as "
     "one string."},
    {"simd", py_simd, METH_NOARGS, "True when this CPU runs the 16-lane AVX-512 kernel."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mbhash",
                                    "Multi-buffer MD5 and SHA-1 (many strings per pass).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__mbhash(void) { return PyModule_Create(&module); }
