// Kernel bodies of syncbn_cpu.cpp, included once per instruction-set variant
// inside `namespace NSB_NS` (baseline x86-64, and AVX2+FMA+F16C under
// `#pragma GCC target`; NSB_LEVEL says which: 0, 1, 2 for AVX-512). No standard-library templates here: a template
// instantiated inside the AVX2 region could be shared with the baseline
// variant and fault on a CPU without AVX2.
//
// Layouts: NCL = (N, C, L) contiguous, one "plane" is the L elements of one
// (n, c); NLC = P rows of C contiguous channels (N holds P, L == 1).
// Element arithmetic is float32; float32 partial sums cover at most ACC
// elements spread over W lanes, everything beyond is double.

namespace NSB_NS {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of inline helpers: no ABI crosses this header

typedef uint16_t u16;
typedef int64_t i64;

constexpr i64 ACC = 4096;     // elements of one float32 partial sum (W lanes)
constexpr int W = 64;         // accumulator lanes (4 x 16, in registers of any width)
constexpr i64 SEG = 32768;    // NCL stats segment (elements of one channel, L2-resident)
constexpr i64 GRAIN = 32768;  // elements per thread below which we do not split

static inline i64 imin(i64 a, i64 b) { return a < b ? a : b; }
static inline i64 imax(i64 a, i64 b) { return a > b ? a : b; }
static inline float bits_f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t f_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
// 0xffffffff where cond, else 0 (branch-free selects vectorize).
static inline uint32_t mask(bool cond) { return 0u - (uint32_t)cond; }

template <class T>
struct Buf {  // zeroed scratch; p == nullptr when allocation failed
  T* p;
  explicit Buf(i64 n) : p((T*)calloc((size_t)imax(n, 1), sizeof(T))) {}
  ~Buf() { free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

struct F32 {
  typedef float T;
  static constexpr char kind = 'f';
  static inline float ld(float v) { return v; }
  static inline float st(float f) { return f; }
};

struct BF16 {
  typedef u16 T;
  static constexpr char kind = 'b';
  static inline float ld(u16 v) { return bits_f((uint32_t)v << 16); }
  // Round to nearest even; NaN stays a (quiet) NaN.
  static inline u16 st(float f) {
    const uint32_t u = f_bits(f);
    const uint32_t nan = mask(f != f);
    const uint32_t v = ((u + 0x7fffu + ((u >> 16) & 1u)) & ~nan) | ((u | 0x00400000u) & nan);
    return (u16)(v >> 16);
  }
};

struct F16 {
  typedef u16 T;
  static constexpr char kind = 'h';
  // IEEE half -> float (normals, subnormals, Inf, NaN), branch-free.
  static inline float ld(u16 h) {
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13;
    const uint32_t e = o & 0x0f800000u;
    o += 112u << 23;                                   // rebias 15 -> 127
    o += mask(e == 0x0f800000u) & (112u << 23);        // Inf/NaN: exponent 255
    const uint32_t den = f_bits(bits_f(o + (1u << 23)) - bits_f(113u << 23));  // subnormal: exact
    const uint32_t dm = mask(e == 0);
    o = (den & dm) | (o & ~dm);
    return bits_f(o | ((uint32_t)(h & 0x8000u) << 16));
  }
  // float -> half, round to nearest even; overflow gives Inf, NaN stays NaN.
  static inline u16 st(float f) {
    uint32_t u = f_bits(f);
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    const int32_t s = (int32_t)u;
    const uint32_t big = 0x7c00u | (mask(s > 0x7f800000) & 0x0200u);
    const uint32_t den = f_bits(bits_f(u) + 0.5f) - (126u << 23);  // 0.5 aligns a subnormal half to the float ulp
    const uint32_t nor = (u - (112u << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
    const uint32_t mb = mask(s >= (int32_t)(143u << 23)), md = mask(s < (int32_t)(113u << 23));
    const uint32_t o = (big & mb) | (den & md & ~mb) | (nor & ~mb & ~md);
    return (u16)(o | (sign >> 16));
  }
};

static inline int threads_for(int nt, i64 work_elems, i64 units) {
  i64 t = nt < 1 ? 1 : nt;
  t = imin(t, imax(1, work_elems / GRAIN));
  t = imin(t, imax(1, units));
  return (int)t;
}

static inline void split(i64 n, int parts, int k, i64* lo, i64* hi) {
  const i64 q = n / parts, r = n % parts;
  *lo = k * q + imin(k, r);
  *hi = *lo + q + (k < r ? 1 : 0);
}

static inline int thread_num() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Chan et al.: merge (nb, mb, Mb) into (na, ma, Ma); M = sum of squared deviations.
// An infinite mean (Inf in the data) stays infinite (or NaN for +Inf and -Inf)
// with a NaN variance, as local BatchNorm gives.
static inline void chan_merge(double& na, double& ma, double& Ma, double nb, double mb, double Mb) {
  if (nb == 0) return;
  if (na == 0) { na = nb; ma = mb; Ma = Mb; return; }
  if (!(__builtin_isfinite(ma) && __builtin_isfinite(mb))) { ma += mb; Ma = NAN; na += nb; return; }
  const double n = na + nb, d = mb - ma;
  ma += d * (nb / n);
  Ma += Mb + d * d * (na * nb / n);
  na = n;
}

#include "syncbn_cpu_pieces.h"
#include "syncbn_cpu_nlc.h"

// ------------------------------------------------------------------ kernels
// The forward's epilogue act(bn + res): rounded to T after the affine and
// after the add, as the op path's elemt, add_ and relu_ round one by one.
template <class D, bool RES, bool RELU>
static inline typename D::T epilogue(float v, const typename D::T* __restrict r, i64 i) {
  if (!RES && !RELU) return D::st(v);
  v = D::ld(D::st(v));
  if (RES) v = D::ld(D::st(v + D::ld(r[i])));
  if (RELU) v = v < 0.f ? 0.f : v;  // -0 and NaN stay, as torch.relu leaves them
  return D::st(v);
}

// out = act((x - m[c]) * s[c] + b[c] + res)          (elemt; act, res by RELU, RES)
// out = a[c] * dy + (x - m[c]) * s[c] + b[c]          (backward_elemt)
template <class D, bool BWD, bool RES = false, bool RELU = false>
static void elementwise(const typename D::T* dy, const typename D::T* x, const typename D::T* res, typename D::T* out,
                        int layout, i64 N, i64 C, i64 L, const float* __restrict a, const float* __restrict m,
                        const float* __restrict s, const float* __restrict b, int nt) {
  typedef typename D::T T;
  const i64 total = N * C * L;
  if (layout == 0) {
    const i64 Q = N * C;
    const int t = threads_for(nt, total, Q);
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
    for (i64 q = 0; q < Q; ++q) {
      const i64 c = q % C;
      const float mc = m[c], sc = s[c], bc = b[c];
      const T* __restrict px = x + q * L;
      const T* __restrict pr = RES ? res + q * L : res;
      T* __restrict po = out + q * L;
      if (BWD) {
        const float ac = a[c];
        const T* __restrict pd = dy + q * L;
        for (i64 i = 0; i < L; ++i) po[i] = D::st(ac * D::ld(pd[i]) + ((D::ld(px[i]) - mc) * sc + bc));
      } else {
        for (i64 i = 0; i < L; ++i) po[i] = epilogue<D, RES, RELU>((D::ld(px[i]) - mc) * sc + bc, pr, i);
      }
    }
  } else {
    const int t = threads_for(nt, total, N);
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
    for (i64 r = 0; r < N; ++r) {
      const T* __restrict px = x + r * C;
      const T* __restrict pr = RES ? res + r * C : res;
      T* __restrict po = out + r * C;
      if (BWD) {
        const T* __restrict pd = dy + r * C;
        for (i64 c = 0; c < C; ++c) po[c] = D::st(a[c] * D::ld(pd[c]) + ((D::ld(px[c]) - m[c]) * s[c] + b[c]));
      } else {
        for (i64 c = 0; c < C; ++c) po[c] = epilogue<D, RES, RELU>((D::ld(px[c]) - m[c]) * s[c] + b[c], pr, c);
      }
    }
  }
}

// A reduction is split by channel (each thread owns whole channels: NCL only)
// or by the batch dim / rows (per-thread partials merged afterwards, in order).
static inline bool split_by_channel(int layout, i64 N, i64 C, int t) {
  return layout == 0 && (t == 1 || N < t || C >= 4 * t);
}

template <class D>
static int stats(const typename D::T* x, int layout, i64 N, i64 C, i64 L, double eps, float* mean, float* invstd, int nt) {
  int t = threads_for(nt, N * C * L, layout == 0 ? imax(N, C) : N);
  const bool in_order = layout == 0 && L <= ACC;  // short planes: ncl_stats_in_order
  if (in_order ? N < t || t == 1 : split_by_channel(layout, N, C, t)) {
    if (in_order) t = (int)imin(t, C);
    Buf<double> cnt(C), mu(C), M2(C), sums(in_order ? 2 * C : 1);
    if (!cnt.p || !mu.p || !M2.p || !sums.p) return -2;
    if (in_order) {
      int failed = 0;
#pragma omp parallel num_threads(t) if (t > 1) reduction(| : failed)
      {
        i64 c0, c1;
        split(C, t, thread_num(), &c0, &c1);
        LaneBuf lanes(2 * (c1 - c0));
        if (!lanes.p) failed = 1;
        else ncl_stats_in_order<D>(x, C, L, 0, N, c0, c1, lanes.p, sums.p, sums.p + C, cnt.p, mu.p, M2.p);
      }
      if (failed) return -2;
    } else {
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
      for (i64 c = 0; c < C; ++c) ncl_stats_range<D>(x, C, L, c, 0, N, cnt.p[c], mu.p[c], M2.p[c]);
    }
    for (i64 c = 0; c < C; ++c) {
      mean[c] = (float)mu.p[c];
      invstd[c] = (float)(1.0 / sqrt(M2.p[c] / cnt.p[c] + eps));
    }
    return 0;
  }
  t = (int)imin(t, N);
  Buf<double> cnt(t * C), mu(t * C), M2(t * C);
  Buf<float> scratch(layout == 0 ? 1 : t * 3 * C);
  Buf<double> sums(layout == 0 && !in_order ? 1 : t * 2 * C);
  if (!cnt.p || !mu.p || !M2.p || !scratch.p || !sums.p) return -2;
  int failed = 0;
#pragma omp parallel num_threads(t) if (t > 1) reduction(| : failed)
  {
    const int k = thread_num();
    i64 lo, hi;
    split(N, t, k, &lo, &hi);
    double* cn = cnt.p + k * C;
    double* m = mu.p + k * C;
    double* M = M2.p + k * C;
    if (in_order) {
      LaneBuf lanes(2 * C);
      double* S = sums.p + k * 2 * C;
      if (!lanes.p) failed = 1;
      else ncl_stats_in_order<D>(x, C, L, lo, hi, 0, C, lanes.p, S, S + C, cn, m, M);
    } else if (layout == 0) {
      for (i64 c = 0; c < C; ++c) ncl_stats_range<D>(x, C, L, c, lo, hi, cn[c], m[c], M[c]);
    } else {
      float* f = scratch.p + k * 3 * C;
      double na = 0;
      double* S = sums.p + k * 2 * C;
      nlc_stats_range<D>(x, C, lo, hi, f, f + C, f + 2 * C, S, S + C, na, m, M);
      for (i64 c = 0; c < C; ++c) cn[c] = na;
    }
  }
  if (failed) return -2;
  if (t == 1) {  // nothing to merge: a loop without calls, vectorized
    for (i64 c = 0; c < C; ++c) {
      mean[c] = (float)mu.p[c];
      invstd[c] = (float)(1.0 / sqrt(M2.p[c] / cnt.p[c] + eps));
    }
    return 0;
  }
  for (i64 c = 0; c < C; ++c) {
    double na = cnt.p[c], ma = mu.p[c], Ma = M2.p[c];
    for (int k = 1; k < t; ++k) chan_merge(na, ma, Ma, cnt.p[k * C + c], mu.p[k * C + c], M2.p[k * C + c]);
    mean[c] = (float)ma;
    invstd[c] = (float)(1.0 / sqrt(Ma / na + eps));
  }
  return 0;
}

// Per-thread partial sums (t blocks of [sum_dy (C) | sum_dy_xmu (C)]) added in thread order.
static inline void merge_partials(const double* part, int t, i64 C, double* sdy, double* sdx) {
  for (i64 c = 0; c < C; ++c) {
    double a = 0, b = 0;
    for (int k = 0; k < t; ++k) { a += part[k * 2 * C + c]; b += part[k * 2 * C + C + c]; }
    sdy[c] = a;
    sdx[c] = b;
  }
}

template <class D, bool MASK>
static int backward_reduce(const typename D::T* dy, const typename D::T* x, const typename D::T* y, typename D::T* dz,
                           int layout, i64 N, i64 C, i64 L, const float* mean, double* sdy, double* sdx, int nt) {
  int t = threads_for(nt, N * C * L, layout == 0 ? imax(N, C) : N);
  if (layout == 0 && L <= ACC) {  // short planes: in memory order (ncl_reduce_in_order)
    const bool by_channel = N < t;  // channels to threads only when the batch cannot feed them all
    t = (int)imin(t, by_channel ? C : N);
    Buf<double> part(by_channel ? 1 : t * 2 * C);
    if (!part.p) return -2;
    int failed = 0;
#pragma omp parallel num_threads(t) if (t > 1) reduction(| : failed)
    {
      const int k = thread_num();
      i64 n0 = 0, n1 = N, c0 = 0, c1 = C;
      split(by_channel ? C : N, t, k, by_channel ? &c0 : &n0, by_channel ? &c1 : &n1);
      LaneBuf lanes(2 * (c1 - c0));
      double* p1 = by_channel ? sdy : part.p + k * 2 * C;
      double* p2 = by_channel ? sdx : part.p + k * 2 * C + C;
      if (!lanes.p) failed = 1;
      else ncl_reduce_in_order<D, MASK>(dy, x, y, dz, C, L, n0, n1, c0, c1, mean, lanes.p, p1, p2);
    }
    if (failed) return -2;
    if (!by_channel) merge_partials(part.p, t, C, sdy, sdx);
    return 0;
  }
  if (split_by_channel(layout, N, C, t)) {
#pragma omp parallel for num_threads(t) schedule(static) if (t > 1)
    for (i64 c = 0; c < C; ++c) ncl_reduce_range<D, MASK>(dy, x, y, dz, C, L, c, 0, N, mean[c], sdy[c], sdx[c]);
    return 0;
  }
  t = (int)imin(t, N);
  Buf<double> part(t * 2 * C);
  Buf<float> scratch(layout == 0 ? 1 : t * 2 * C);
  if (!part.p || !scratch.p) return -2;
#pragma omp parallel num_threads(t) if (t > 1)
  {
    const int k = thread_num();
    i64 lo, hi;
    split(N, t, k, &lo, &hi);
    double* p1 = part.p + k * 2 * C;
    double* p2 = p1 + C;
    if (layout == 0) {
      for (i64 c = 0; c < C; ++c) ncl_reduce_range<D, MASK>(dy, x, y, dz, C, L, c, lo, hi, mean[c], p1[c], p2[c]);
    } else {
      float* f = scratch.p + k * 2 * C;
      nlc_reduce_range<D, MASK>(dy, x, y, dz, C, lo, hi, mean, f, f + C, p1, p2);
    }
  }
  merge_partials(part.p, t, C, sdy, sdx);
  return 0;
}

// ------------------------------------------------------------------ typed entry points
static int run_stats(const void* x, int dtype, int layout, i64 N, i64 C, i64 L, double eps, float* mean, float* invstd, int nt) {
  switch (dtype) {
    case 0: return stats<F32>((const float*)x, layout, N, C, L, eps, mean, invstd, nt);
    case 1: return stats<F16>((const u16*)x, layout, N, C, L, eps, mean, invstd, nt);
    default: return stats<BF16>((const u16*)x, layout, N, C, L, eps, mean, invstd, nt);
  }
}

static int run_elementwise(bool bwd, const void* dy, const void* x, void* out, int dtype, int layout, i64 N, i64 C, i64 L,
                           const float* a, const float* m, const float* s, const float* b, int nt) {
  switch (dtype * 2 + (bwd ? 1 : 0)) {
    case 0: elementwise<F32, false>(nullptr, (const float*)x, nullptr, (float*)out, layout, N, C, L, a, m, s, b, nt); break;
    case 1: elementwise<F32, true>((const float*)dy, (const float*)x, nullptr, (float*)out, layout, N, C, L, a, m, s, b, nt); break;
    case 2: elementwise<F16, false>(nullptr, (const u16*)x, nullptr, (u16*)out, layout, N, C, L, a, m, s, b, nt); break;
    case 3: elementwise<F16, true>((const u16*)dy, (const u16*)x, nullptr, (u16*)out, layout, N, C, L, a, m, s, b, nt); break;
    case 4: elementwise<BF16, false>(nullptr, (const u16*)x, nullptr, (u16*)out, layout, N, C, L, a, m, s, b, nt); break;
    default: elementwise<BF16, true>((const u16*)dy, (const u16*)x, nullptr, (u16*)out, layout, N, C, L, a, m, s, b, nt); break;
  }
  return 0;
}

static int run_backward_reduce(const void* dy, const void* x, const void* y, void* dz, int dtype, int layout, i64 N,
                               i64 C, i64 L, const float* mean, double* sdy, double* sdx, int nt) {
  const bool mask = y != nullptr;
  switch (dtype * 2 + (mask ? 1 : 0)) {
    case 0: return backward_reduce<F32, false>((const float*)dy, (const float*)x, nullptr, nullptr, layout, N, C, L, mean, sdy, sdx, nt);
    case 1: return backward_reduce<F32, true>((const float*)dy, (const float*)x, (const float*)y, (float*)dz, layout, N, C, L, mean, sdy, sdx, nt);
    case 2: return backward_reduce<F16, false>((const u16*)dy, (const u16*)x, nullptr, nullptr, layout, N, C, L, mean, sdy, sdx, nt);
    case 3: return backward_reduce<F16, true>((const u16*)dy, (const u16*)x, (const u16*)y, (u16*)dz, layout, N, C, L, mean, sdy, sdx, nt);
    case 4: return backward_reduce<BF16, false>((const u16*)dy, (const u16*)x, nullptr, nullptr, layout, N, C, L, mean, sdy, sdx, nt);
    default: return backward_reduce<BF16, true>((const u16*)dy, (const u16*)x, (const u16*)y, (u16*)dz, layout, N, C, L, mean, sdy, sdx, nt);
  }
}

template <class D>
static void elemt_act_typed(const void* x, const void* res, void* out, int layout, i64 N, i64 C, i64 L, const float* m,
                            const float* s, const float* b, bool relu, int nt) {
  typedef typename D::T T;
  const T* px = (const T*)x;
  const T* pr = (const T*)res;
  T* po = (T*)out;
  if (res && relu) elementwise<D, false, true, true>(nullptr, px, pr, po, layout, N, C, L, nullptr, m, s, b, nt);
  else if (res) elementwise<D, false, true, false>(nullptr, px, pr, po, layout, N, C, L, nullptr, m, s, b, nt);
  else elementwise<D, false, false, true>(nullptr, px, pr, po, layout, N, C, L, nullptr, m, s, b, nt);
}

static int run_elemt_act(const void* x, const void* res, void* out, int dtype, int layout, i64 N, i64 C, i64 L,
                         const float* m, const float* s, const float* b, bool relu, int nt) {
  switch (dtype) {
    case 0: elemt_act_typed<F32>(x, res, out, layout, N, C, L, m, s, b, relu, nt); break;
    case 1: elemt_act_typed<F16>(x, res, out, layout, N, C, L, m, s, b, relu, nt); break;
    default: elemt_act_typed<BF16>(x, res, out, layout, N, C, L, m, s, b, relu, nt); break;
  }
  return 0;
}

#pragma GCC diagnostic pop
}  // namespace NSB_NS
