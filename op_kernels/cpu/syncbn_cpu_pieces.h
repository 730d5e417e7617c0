// Building blocks of the kernels in syncbn_cpu_impl.h: vector types per
// element type, and the NCL (channel-major) reduction pieces; the NLC ones
// are in syncbn_cpu_nlc.h. Included by
// syncbn_cpu_impl.h inside `namespace NSB_NS`, once per instruction-set
// variant, so it has no include guard and no standard-library includes.

// ------------------------------------------------------------------ vectors
// vf: VN float32 lanes as GCC vector extensions, one register of the
// variant (SSE: 4, AVX2: 8, AVX-512: 16). The reductions keep their float32
// partial sums in registers of this type, so that the chains of dependent
// adds are several vectors wide: auto-vectorized loops over an accumulator
// array in memory ran 3-5x below the read bandwidth (store-forwarding latency
// per add). (A wider-than-register vector type lives in memory: a 64-byte
// type made the AVX2 build slower than the baseline one.)
//
// The arithmetic does not depend on VN: element i of a run always goes to
// lane i % W, and every lane is summed in the same order (see flush), so all
// variants give the same bits.
#if NSB_LEVEL >= 2
constexpr int VN = 16;
#elif NSB_LEVEL >= 1
constexpr int VN = 8;
#else
constexpr int VN = 4;
#endif
constexpr int VL = 16;        // lanes of one step of the flush's sum tree (any VN gives the same tree)
constexpr int NV = W / VN;    // registers of W lanes
constexpr int PV = VL / VN;   // registers of VL lanes
typedef float vf __attribute__((vector_size(VN * 4)));
typedef uint32_t vu __attribute__((vector_size(VN * 4)));
typedef int32_t vi __attribute__((vector_size(VN * 4)));
typedef uint16_t vh __attribute__((vector_size(VN * 2)));
// Helpers that take or return vectors are always inlined (no vector ABI
// between them, and the accumulators stay in registers).
#define NSB_INLINE inline __attribute__((always_inline))

template <class D> struct V;
template <> struct V<F32> {
  static NSB_INLINE vf ld(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
  // v holds float32 values: stored as they are.
  static NSB_INLINE void st_exact(float* p, vf v) { memcpy(p, &v, sizeof v); }
};
template <> struct V<BF16> {
  static NSB_INLINE vf ld(const u16* p) {
    vh h;
    memcpy(&h, p, sizeof h);
#if NSB_LEVEL >= 2
    // Each bfloat16 into the high half of a zeroed 32-bit lane (a shuffle:
    // __builtin_convertvector compiled to 5 instructions per vector here).
    typedef uint16_t v32h __attribute__((vector_size(64)));
    const vh z = {};
    const v32h w = __builtin_shufflevector(z, h, 0, 16, 0, 17, 0, 18, 0, 19, 0, 20, 0, 21, 0, 22, 0, 23, 0, 24, 0, 25, 0,
                                           26, 0, 27, 0, 28, 0, 29, 0, 30, 0, 31);
    return (vf)w;
#else
    return (vf)(__builtin_convertvector(h, vu) << 16);
#endif
  }
  // v holds bfloat16 values (loaded ones, or 0): truncation is exact.
  static NSB_INLINE void st_exact(u16* p, vf v) {
    const vh h = __builtin_convertvector((vu)v >> 16, vh);
    memcpy(p, &h, sizeof h);
  }
};
template <> struct V<F16> {  // not a default path (see cpu_fast.py): lane by lane
  static inline vf ld(const u16* p) { vf v; for (int j = 0; j < VN; ++j) v[j] = F16::ld(p[j]); return v; }
  static inline void st_exact(u16* p, vf v) { for (int j = 0; j < VN; ++j) p[j] = F16::st(v[j]); }
};

// ------------------------------------------------------------------ NCL pieces
// Lane accumulators Lanes (W float32 lanes in NV registers; element i of a
// run goes to lane i % W on every instruction set) collect whole runs
// (planes or plane chunks); the caller flushes them into double after about
// ACC elements, so per-plane overhead stays small for short planes (7x7, 14x14).
struct Lanes {
  vf v[NV];
};
static_assert(W == NV * VN && VL == PV * VN, "W and VL lanes are whole registers");

// f(k, i, n): register k (0..NV-1) of the accumulators takes the n <= VN
// elements at offset i, for a run of len: whole registers NV at a time (NV
// independent chains), then the rest; the last register holds fewer than VN
// elements (the lanes past them get +0 or stay: see part()). Element i always
// goes to lane i % W, whatever the instruction set.
// (Every k is a constant after unrolling, so the accumulators stay in registers.)
template <class F>
static NSB_INLINE void for_vectors(i64 len, F&& f) {
  i64 i = 0;
  for (; i + W <= len; i += W) {
#pragma GCC unroll 16
    for (int k = 0; k < NV; ++k) f(k, i + k * VN, VN);
  }
#pragma GCC unroll 16
  for (int k = 0; k < NV; ++k)
    if (i + k * VN < len) f(k, i + k * VN, (int)imin(VN, len - i - k * VN));
}

// The first n lanes of v, zeros after (n == VN: v itself).
static NSB_INLINE vf part(vf v, int n) {
  if (n == VN) return v;
  static const int32_t lane[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  vi idx;
  memcpy(&idx, lane, sizeof idx);
  const vf zero = {};
  return idx < n ? v : zero;
}

// n <= VN elements of p as a vector (zeros past them): no read beyond the run.
// A copy through a zeroed buffer costs a failed store-to-load forward (about
// 20 cycles), as much as a whole 14x14 plane's vectors: where the variant has
// masked loads (AVX-512: both types, AVX2: float32) they load the part instead.
// The lanes get the same values either way.
template <class D>
static NSB_INLINE vf ld_n(const typename D::T* p, int n) {
  if (n == VN) return V<D>::ld(p);
#if NSB_LEVEL >= 2
  const unsigned k = (1u << n) - 1u;
  if constexpr (D::kind == 'f') {
    const __m512 v = _mm512_maskz_loadu_ps((__mmask16)k, (const void*)p);
    vf r; memcpy(&r, &v, sizeof r); return r;
  }
  if constexpr (D::kind == 'b') {
    const __m256i h = _mm256_maskz_loadu_epi16((__mmask16)k, (const void*)p);
    u16 b[VN]; memcpy(b, &h, sizeof b);  // (a register move after inlining)
    return V<D>::ld((const typename D::T*)b);
  }
#elif NSB_LEVEL >= 1
  if constexpr (D::kind == 'f') {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 v = _mm256_maskload_ps((const float*)p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
    vf r; memcpy(&r, &v, sizeof r); return r;
  }
#endif
  typename D::T buf[VN] = {};
  memcpy(buf, p, (size_t)n * sizeof(typename D::T));
  return V<D>::ld(buf);
}

template <class D>
static NSB_INLINE void st_exact_n(typename D::T* p, vf v, int n) {
  if (n == VN) return V<D>::st_exact(p, v);
  typename D::T buf[VN];
  V<D>::st_exact(buf, v);
  memcpy(p, buf, (size_t)n * sizeof(typename D::T));
}

template <class D>
static NSB_INLINE void add_sum(const typename D::T* __restrict p, i64 n, Lanes& acc) {
  for_vectors(n, [&](int k, i64 i, int c) { acc.v[k] += ld_n<D>(p + i, c); });
}

template <class D>
static NSB_INLINE void add_dev(const typename D::T* __restrict p, i64 n, float m, Lanes& a1, Lanes& a2) {
  for_vectors(n, [&](int k, i64 i, int c) {
    const vf d = part(ld_n<D>(p + i, c) - m, c);
    a1.v[k] += d;
    a2.v[k] += d * d;
  });
}

// MASK: the gradient of relu(z) with z's output y: g = y <= 0 ? 0 : dy (as
// aten's threshold_backward), written to pz, which the elementwise pass reads.
template <class D, bool MASK>
static NSB_INLINE void add_dot(const typename D::T* __restrict pd, const typename D::T* __restrict px,
                               const typename D::T* __restrict py, typename D::T* __restrict pz, i64 n, float m,
                               Lanes& a1, Lanes& a2) {
  const vf zero = {};
  for_vectors(n, [&](int k, i64 i, int c) {
    vf g = ld_n<D>(pd + i, c);  // zeros past the run: they add nothing
    if (MASK) {
      g = ld_n<D>(py + i, c) <= zero ? zero : g;
      st_exact_n<D>(pz + i, g, c);
    }
    a1.v[k] += g;
    a2.v[k] += g * (ld_n<D>(px + i, c) - m);
  });
}

// The lanes' sum into s, zeroed: W lanes folded to VL by the tree
// (q0 + q1) + (q2 + q3) over the four quarters q of W, then the VL lanes in
// double, in lane order; the same operations for every VN (a quarter is PV
// registers). Lanes that only ever got +0 and -0 add nothing either way.
static NSB_INLINE void flush(Lanes& acc, double& s) {
  double t = 0.0;
#pragma GCC unroll 4
  for (int h = 0; h < PV; ++h) {
    const vf v = (acc.v[h] + acc.v[PV + h]) + (acc.v[2 * PV + h] + acc.v[3 * PV + h]);
    for (int j = 0; j < VN; ++j) t += v[j];
  }
  acc = Lanes{};
  s += t;
}

// Calls f(offset, length) for the runs of a segment: np planes (`stride`
// elements apart) of len elements, each split into pieces of at most ACC;
// after at least ACC elements, and at the end, calls done(). Planes shorter
// than a page start a new stream each, which the hardware prefetchers do not
// follow (the reductions ran at 1/3 of the read bandwidth on 14x14 planes):
// pf(offset, length) is called for the plane `ahead` planes ahead.
template <class F, class G, class P>
static NSB_INLINE void for_runs(i64 np, i64 stride, i64 len, i64 ahead, F&& f, G&& done, P&& pf) {
  i64 since = 0;
  for (i64 j = 0; j < np; ++j) {
    if (j + ahead < np) pf((j + ahead) * stride, len);
    for (i64 l0 = 0; l0 < len; l0 += ACC) {
      const i64 k = imin(len - l0, ACC);
      f(j * stride + l0, k);
      since += k;
      if (since >= ACC) { done(); since = 0; }
    }
  }
  if (since) done();
}

// How many planes of len elements ahead to prefetch: about PF_DIST bytes
// (the data in flight while memory answers), at least 2 planes.
constexpr i64 PF_DIST = 6144;
template <class T>
static inline i64 pf_ahead(i64 len) { return imin(8, imax(2, PF_DIST / imax(1, len * (i64)sizeof(T)))); }

// Prefetches the first PF_BYTES of the n elements at p: a short plane whole,
// the start of a long one (the prefetchers follow it once it runs).
constexpr i64 PF_BYTES = 4096;
template <class T>
static inline void prefetch(const T* p, i64 n) {
  const i64 bytes = imin(n * (i64)sizeof(T), PF_BYTES);
  const char* c = (const char*)p;
  for (i64 o = 0; o < bytes; o += 64) __builtin_prefetch(c + o);
}

// Segment of np planes of len elements: shifted two-pass (the second pass
// reads the segment from cache), merged into (na, ma, Ma).
template <class D>
static inline void seg_stats(const typename D::T* p, i64 np, i64 stride, i64 len, double& na, double& ma, double& Ma) {
  Lanes a1 = {}, a2 = {};
  double s = 0.0;
  for_runs(np, stride, len, pf_ahead<typename D::T>(len), [&](i64 o, i64 k) { add_sum<D>(p + o, k, a1); },
           [&] { flush(a1, s); }, [&](i64 o, i64 k) { prefetch(p + o, k); });
  const double k = (double)np * (double)len;
  const float m = (float)(s / k);
  double s1 = 0.0, s2 = 0.0;
  for_runs(np, stride, len, 0, [&](i64 o, i64 n) { add_dev<D>(p + o, n, m, a1, a2); },
           [&] { flush(a1, s1); flush(a2, s2); }, [](i64, i64) {});  // (the segment is in cache from the first pass)
  double M = s2 - s1 * s1 / k;  // exact-mean correction: sum((x - m)^2) - k*(mean - m)^2
  if (M < 0) M = 0;             // (false for NaN: NaN stays)
  if (__builtin_isfinite(m))
    chan_merge(na, ma, Ma, k, (double)m + s1 / k, M);
  else  // Inf/NaN in the segment: mean Inf or NaN, variance NaN
    chan_merge(na, ma, Ma, k, s / k, NAN);
}

// Statistics of channel c over n in [n0, n1) in one pass over memory: a head
// of at least HEAD elements (whole planes; the first SEG elements of a longer
// plane) by the shifted two-pass of seg_stats, whose exact mean K then
// shifts everything after it: s1 = sum(x - K), s2 = sum((x - K)^2) in float32
// lanes flushed to double, mean = K + s1/k, M2 = s2 - s1^2/k, merged with the
// head's by Chan's formula. K is within about std/16 of the mean (HEAD
// elements), so s2 - s1^2/k does not cancel; two passes over every segment
// (the second from cache) ran at a third of the read bandwidth on 14x14
// planes. A non-finite head mean shifts by 0: Inf and NaN then reach the
// sums and give the mean and variance local BatchNorm gives.
constexpr i64 HEAD = 256;
template <class D>
static void ncl_stats_range(const typename D::T* x, i64 C, i64 L, i64 c, i64 n0, i64 n1, double& na, double& ma, double& Ma) {
  na = 0; ma = 0; Ma = 0;
  const typename D::T* p = x + (n0 * C + c) * L;
  const i64 np = n1 - n0, stride = C * L;
  const i64 hp = L > SEG ? 1 : imin(np, (HEAD + L - 1) / L);  // head planes
  const i64 hl = imin(L, SEG);                                 // head elements of each
  seg_stats<D>(p, hp, stride, hl, na, ma, Ma);
  const float K = __builtin_isfinite(ma) ? (float)ma : 0.f;
  Lanes a1 = {}, a2 = {};
  double s1 = 0.0, s2 = 0.0;
  auto add = [&](const typename D::T* q) { return [&, q](i64 o, i64 n) { add_dev<D>(q + o, n, K, a1, a2); }; };
  auto done = [&] { flush(a1, s1); flush(a2, s2); };
  auto pf = [&](const typename D::T* q) { return [q](i64 o, i64 n) { prefetch(q + o, n); }; };
  if (hl < L)  // the rest of a long head plane
    for_runs(1, 0, L - hl, 0, add(p + hl), done, pf(p));
  const typename D::T* rest = p + hp * stride;
  for_runs(np - hp, stride, L, pf_ahead<typename D::T>(L), add(rest), done, pf(rest));
  const double k = (double)(np - hp) * (double)L + (double)(L - hl);
  if (k == 0) return;
  double M = s2 - s1 * s1 / k;
  if (M < 0) M = 0;  // (false for NaN: NaN stays)
  const double mb = (double)K + s1 / k;
  chan_merge(na, ma, Ma, k, mb, __builtin_isfinite(mb) ? M : NAN);
}

// The statistics of channels [c0, c1) over n in [n0, n1) for planes of at
// most ACC elements, in memory order: the same head, shift, sums and flushes
// as ncl_stats_range (the same bits), but after the head the planes are read
// sample by sample, each channel's lanes kept in `lanes` (2 per channel)
// between its planes (see ncl_reduce_in_order). S1, S2: scratch indexed by c.
template <class D>
static void ncl_stats_in_order(const typename D::T* x, i64 C, i64 L, i64 n0, i64 n1, i64 c0, i64 c1,
                               Lanes* __restrict lanes, double* __restrict S1, double* __restrict S2,
                               double* __restrict na, double* __restrict ma, double* __restrict Ma) {
  const i64 np = n1 - n0, hp = imin(np, (HEAD + L - 1) / L), per = (ACC + L - 1) / L;
  for (i64 c = c0; c < c1; ++c) {
    na[c] = 0; ma[c] = 0; Ma[c] = 0;
    seg_stats<D>(x + (n0 * C + c) * L, hp, C * L, L, na[c], ma[c], Ma[c]);
    S1[c] = 0;
    S2[c] = 0;
    lanes[2 * (c - c0)] = Lanes{};
    lanes[2 * (c - c0) + 1] = Lanes{};
  }
  for (i64 n = n0 + hp; n < n1; ++n) {
    const bool last = (n - n0 - hp + 1) % per == 0 || n + 1 == n1;
    for (i64 c = c0; c < c1; ++c) {
      const float K = __builtin_isfinite(ma[c]) ? (float)ma[c] : 0.f;
      Lanes a1 = lanes[2 * (c - c0)], a2 = lanes[2 * (c - c0) + 1];
      add_dev<D>(x + (n * C + c) * L, L, K, a1, a2);
      if (last) {
        flush(a1, S1[c]);
        flush(a2, S2[c]);
      }
      lanes[2 * (c - c0)] = a1;
      lanes[2 * (c - c0) + 1] = a2;
    }
  }
  const double k = (double)(np - hp) * (double)L;
  if (k == 0) return;
  for (i64 c = c0; c < c1; ++c) {
    const float K = __builtin_isfinite(ma[c]) ? (float)ma[c] : 0.f;
    double M = S2[c] - S1[c] * S1[c] / k;
    if (M < 0) M = 0;  // (false for NaN: NaN stays)
    const double mb = (double)K + S1[c] / k;
    chan_merge(na[c], ma[c], Ma[c], k, mb, __builtin_isfinite(mb) ? M : NAN);
  }
}

template <class D, bool MASK>
static void ncl_reduce_range(const typename D::T* dy, const typename D::T* x, const typename D::T* y, typename D::T* dz,
                             i64 C, i64 L, i64 c, i64 n0, i64 n1, float m, double& sdy, double& sdx) {
  sdy = 0; sdx = 0;
  Lanes a1 = {}, a2 = {};
  const i64 off = (n0 * C + c) * L;
  for_runs(n1 - n0, C * L, L, pf_ahead<typename D::T>(L),
           [&](i64 o, i64 k) {
             add_dot<D, MASK>(dy + off + o, x + off + o, MASK ? y + off + o : y, MASK ? dz + off + o : dz, k, m, a1, a2);
           },
           [&] { flush(a1, sdy); flush(a2, sdx); },
           [&](i64 o, i64 k) {
             prefetch(dy + off + o, k);
             prefetch(x + off + o, k);
             if (MASK) prefetch(y + off + o, k);
           });
}

// Planes of at most ACC elements in memory order: n outer, channels [c0, c1)
// inner, each channel's lanes kept in `lanes` (2 per channel) between its
// planes and flushed into sdy[c], sdx[c] after every ceil(ACC / L) planes,
// as for_runs does. Channel by channel, every plane started a new memory
// stream (14x14: every 784 bytes), which ran at half the speed of the same
// bytes read in order.
template <class D, bool MASK>
static void ncl_reduce_in_order(const typename D::T* dy, const typename D::T* x, const typename D::T* y,
                                typename D::T* dz, i64 C, i64 L, i64 n0, i64 n1, i64 c0, i64 c1,
                                const float* __restrict mean, Lanes* __restrict lanes, double* __restrict sdy,
                                double* __restrict sdx) {
  const i64 per = (ACC + L - 1) / L;
  for (i64 c = c0; c < c1; ++c) {
    sdy[c] = 0;
    sdx[c] = 0;
    lanes[2 * (c - c0)] = Lanes{};
    lanes[2 * (c - c0) + 1] = Lanes{};
  }
  for (i64 n = n0; n < n1; ++n) {
    const bool last = (n - n0 + 1) % per == 0 || n + 1 == n1;
    for (i64 c = c0; c < c1; ++c) {
      const i64 o = (n * C + c) * L;
      Lanes a1 = lanes[2 * (c - c0)], a2 = lanes[2 * (c - c0) + 1];
      add_dot<D, MASK>(dy + o, x + o, MASK ? y + o : y, MASK ? dz + o : dz, L, mean[c], a1, a2);
      if (last) {
        flush(a1, sdy[c]);
        flush(a2, sdx[c]);
      }
      lanes[2 * (c - c0)] = a1;
      lanes[2 * (c - c0) + 1] = a2;
    }
  }
}

// Zeroed, 64-byte aligned lane sets (vectors of the AVX-512 variant need it).
struct LaneBuf {
  Lanes* p;
  explicit LaneBuf(i64 n) : p((Lanes*)aligned_alloc(64, (size_t)imax(n, 1) * sizeof(Lanes))) {}
  ~LaneBuf() { free(p); }
  LaneBuf(const LaneBuf&) = delete;
  LaneBuf& operator=(const LaneBuf&) = delete;
};
