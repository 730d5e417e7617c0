// NLC (channels-last) reduction pieces of the kernels in syncbn_cpu_impl.h:
// P rows of C contiguous channels. Included by syncbn_cpu_impl.h inside
// `namespace NSB_NS` after syncbn_cpu_pieces.h (vector types, chan_merge),
// once per instruction-set variant, so it has no include guard and no
// standard-library includes.

// 128 rows: a float32 partial sum then covers <= 128 terms, as a lane of the
// NCL sums (fewer rows made the per-block merge of every channel cost as much
// as the data at C = 1024).
static inline i64 nlc_rows_per_block(i64) { return 128; }

// Statistics in channel tiles of TILE channels kept in registers across the
// rows of a block, both passes over the tile's block from L1 (row loops over
// all channels ran at a third of the read bandwidth for C = 64). Each channel
// adds in one fixed order on every instruction set (here even and odd rows
// apart; in the row loops below, which take the channels past the last whole
// tile, and every channel when C > NLC_TILES_MAX_C, groups of four rows).
// The backward reduce keeps its row loop: a single pass, it ran as fast as
// with tiles or faster.
constexpr i64 TILE = 32;
static inline i64 nlc_tiled(i64 C) { return C / TILE * TILE; }

// Rows go two at a time into separate sums (even and odd rows of the block),
// added at the end: one chain per vector ran at the add latency, not at the
// loads' rate. pf, pf_bytes: this tile's share of the next block, prefetched
// here so that memory streams in while the block is computed on (the tiles
// read the block column-wise, which the hardware prefetchers do not follow).
template <class D>
static inline void nlc_tile_stats(const typename D::T* x, i64 C, i64 b0, i64 b1, float k, float* fs, float* f1,
                                  float* f2, const char* pf, i64 pf_bytes) {
  constexpr int TV = TILE / VN;  // registers of one tile
  for (i64 o = 0; o < pf_bytes; o += 64) __builtin_prefetch(pf + o);
  vf s[TV] = {}, t[TV] = {};
  i64 r = b0;
  for (; r + 1 < b1; r += 2) {
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) {
      s[j] += V<D>::ld(x + r * C + j * VN);
      t[j] += V<D>::ld(x + (r + 1) * C + j * VN);
    }
  }
  if (r < b1) {
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) s[j] += V<D>::ld(x + r * C + j * VN);
  }
#pragma GCC unroll 8
  for (int j = 0; j < TV; ++j) s[j] = (s[j] + t[j]) / k;
  vf a[TV] = {}, q[TV] = {}, e[TV] = {}, w[TV] = {};
  for (r = b0; r + 1 < b1; r += 2) {
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) {
      const vf d = V<D>::ld(x + r * C + j * VN) - s[j], g = V<D>::ld(x + (r + 1) * C + j * VN) - s[j];
      a[j] += d;
      q[j] += d * d;
      e[j] += g;
      w[j] += g * g;
    }
  }
  if (r < b1) {
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) {
      const vf d = V<D>::ld(x + r * C + j * VN) - s[j];
      a[j] += d;
      q[j] += d * d;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < TV; ++j) {
    a[j] += e[j];
    q[j] += w[j];
    memcpy(fs + j * VN, &s[j], sizeof s[j]);
    memcpy(f1 + j * VN, &a[j], sizeof a[j]);
    memcpy(f2 + j * VN, &q[j], sizeof q[j]);
  }
}

// Up to this C (rows of up to 256 bytes) the head block's two-pass runs in
// channel tiles and the later blocks keep the sums of whole vectors of
// channels in registers; wider rows take the row loops for every channel
// (channel tiles of them read the block in 1-4 KiB-strided columns).
constexpr i64 NLC_TILES_MAX_C = 64;

// Rows [b0, b1) of channels [c0, C) into per-channel float32 sums in
// memory (fs += x), four rows per update of each sum: ((r0 + r1) + (r2 +
// r3)), then a pair, then a last row; the same order on every instruction
// set (the vectors run across channels). One row per update (a load and a
// store of every sum per row) ran at 0.2 of the L2 read bandwidth at C = 1024.
template <class D>
static inline void nlc_rows_sum(const typename D::T* x, i64 C, i64 c0, i64 b0, i64 b1, float* __restrict fs) {
  typedef typename D::T T;
  i64 r = b0;
  for (; r + 3 < b1; r += 4) {
    const T* __restrict p0 = x + r * C;
    const T* __restrict p1 = p0 + C;
    const T* __restrict p2 = p1 + C;
    const T* __restrict p3 = p2 + C;
    for (i64 c = c0; c < C; ++c) fs[c] += (D::ld(p0[c]) + D::ld(p1[c])) + (D::ld(p2[c]) + D::ld(p3[c]));
  }
  for (; r + 1 < b1; r += 2) {
    const T* __restrict p0 = x + r * C;
    const T* __restrict p1 = p0 + C;
    for (i64 c = c0; c < C; ++c) fs[c] += D::ld(p0[c]) + D::ld(p1[c]);
  }
  if (r < b1) {
    const T* __restrict p0 = x + r * C;
    for (i64 c = c0; c < C; ++c) fs[c] += D::ld(p0[c]);
  }
}

// The sums of nlc_rows_dev for the TV * VN channels at c0, kept in
// registers over the rows instead of in memory: the same additions in the
// same order (the same bits), f1 and f2 written once at the end.
template <class D, int TV>
static NSB_INLINE void nlc_tile_dev(const typename D::T* x, i64 C, i64 c0, i64 b0, i64 b1, const float* __restrict K,
                                    float* __restrict f1, float* __restrict f2) {
  vf k[TV], a[TV], q[TV];
#pragma GCC unroll 8
  for (int j = 0; j < TV; ++j) {
    k[j] = V<F32>::ld(K + c0 + j * VN);
    a[j] = vf{};
    q[j] = vf{};
  }
  const typename D::T* p = x + b0 * C + c0;
  i64 r = b0;
  for (; r + 3 < b1; r += 4, p += 4 * C) {
    // A page ahead: its TLB entry is fetched before the loads reach it (the
    // hardware prefetchers stop at page ends; past the 8 MiB the TLB maps,
    // C = 32-64 ran at 0.65-0.75 of the read bandwidth without this, 0.9 with).
    __builtin_prefetch((const char*)p + 4096);
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) {
      const vf d0 = V<D>::ld(p + j * VN) - k[j], d1 = V<D>::ld(p + C + j * VN) - k[j];
      const vf d2 = V<D>::ld(p + 2 * C + j * VN) - k[j], d3 = V<D>::ld(p + 3 * C + j * VN) - k[j];
      a[j] += (d0 + d1) + (d2 + d3);
      q[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
  }
  for (; r + 1 < b1; r += 2, p += 2 * C) {
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) {
      const vf d0 = V<D>::ld(p + j * VN) - k[j], d1 = V<D>::ld(p + C + j * VN) - k[j];
      a[j] += d0 + d1;
      q[j] += d0 * d0 + d1 * d1;
    }
  }
  if (r < b1) {
#pragma GCC unroll 8
    for (int j = 0; j < TV; ++j) {
      const vf d0 = V<D>::ld(p + j * VN) - k[j];
      a[j] += d0;
      q[j] += d0 * d0;
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < TV; ++j) {
    V<F32>::st_exact(f1 + c0 + j * VN, a[j]);
    V<F32>::st_exact(f2 + c0 + j * VN, q[j]);
  }
}

// f1 += x - K, f2 += (x - K)^2 (f1, f2 zeroed by the caller), in the same
// order as nlc_rows_sum. Rows of up to NLC_TILES_MAX_C channels keep the
// sums of whole vectors of channels in registers (nlc_tile_dev; the row
// loop's load and store of every sum per group of rows made C = 64 run at
// 0.7 of the read bandwidth); the channels past them take the row loop.
template <class D>
static inline void nlc_rows_dev(const typename D::T* x, i64 C, i64 c0, i64 b0, i64 b1, const float* __restrict K,
                                float* __restrict f1, float* __restrict f2) {
  typedef typename D::T T;
  while (C <= NLC_TILES_MAX_C && C - c0 >= VN) {
    if (VN <= 8 && C - c0 >= 8 * VN) {  // narrow vectors: 8 a tile (AVX2: a whole 64-channel row, 0.78 -> 0.88)
      nlc_tile_dev<D, 8>(x, C, c0, b0, b1, K, f1, f2);
      c0 += 8 * VN;
      continue;
    }
    const i64 tv = imin(4, (C - c0) / VN);
    if (tv == 4) nlc_tile_dev<D, 4>(x, C, c0, b0, b1, K, f1, f2);
    else if (tv == 3) nlc_tile_dev<D, 3>(x, C, c0, b0, b1, K, f1, f2);
    else if (tv == 2) nlc_tile_dev<D, 2>(x, C, c0, b0, b1, K, f1, f2);
    else nlc_tile_dev<D, 1>(x, C, c0, b0, b1, K, f1, f2);
    c0 += tv * VN;
  }
  i64 r = b0;
  for (; r + 3 < b1; r += 4) {
    const T* __restrict p0 = x + r * C;
    const T* __restrict p1 = p0 + C;
    const T* __restrict p2 = p1 + C;
    const T* __restrict p3 = p2 + C;
    for (i64 c = c0; c < C; ++c) {
      const float k = K[c];
      const float d0 = D::ld(p0[c]) - k, d1 = D::ld(p1[c]) - k, d2 = D::ld(p2[c]) - k, d3 = D::ld(p3[c]) - k;
      f1[c] += (d0 + d1) + (d2 + d3);
      f2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
  }
  for (; r + 1 < b1; r += 2) {
    const T* __restrict p0 = x + r * C;
    const T* __restrict p1 = p0 + C;
    for (i64 c = c0; c < C; ++c) {
      const float d0 = D::ld(p0[c]) - K[c], d1 = D::ld(p1[c]) - K[c];
      f1[c] += d0 + d1;
      f2[c] += d0 * d0 + d1 * d1;
    }
  }
  if (r < b1) {
    const T* __restrict p0 = x + r * C;
    for (i64 c = c0; c < C; ++c) {
      const float d0 = D::ld(p0[c]) - K[c];
      f1[c] += d0;
      f2[c] += d0 * d0;
    }
  }
}

// Rows [b0, b1) (one block, at most R rows; r1: the range's end, for the
// prefetch of the next block): shifted two-pass in channel tiles, merged
// into (na, ma[], Ma[]). fs, f1, f2: scratch of C floats.
template <class D>
static void nlc_block_two_pass(const typename D::T* x, i64 C, i64 b0, i64 b1, i64 r1, float* __restrict fs,
                               float* __restrict f1, float* __restrict f2, double& na, double* __restrict ma,
                               double* __restrict Ma) {
  const i64 R = nlc_rows_per_block(C);
  const float k = (float)(b1 - b0);
  const i64 ct = C <= NLC_TILES_MAX_C ? nlc_tiled(C) : 0;
  const char* next = (const char*)(x + b1 * C);
  const i64 next_bytes = (imin(r1, b1 + R) - b1) * C * (i64)sizeof(typename D::T);
  const i64 share = ct ? (next_bytes / (ct / TILE) + 63) / 64 * 64 : 0;
  for (i64 c0 = 0, j = 0; c0 < ct; c0 += TILE, ++j) {
    const i64 lo = imin(j * share, next_bytes);
    nlc_tile_stats<D>(x + c0, C, b0, b1, k, fs + c0, f1 + c0, f2 + c0, next + lo, imin(share, next_bytes - lo));
  }
  for (i64 c = ct; c < C; ++c) fs[c] = 0.f;
  nlc_rows_sum<D>(x, C, ct, b0, b1, fs);
  for (i64 c = ct; c < C; ++c) { fs[c] /= k; f1[c] = 0.f; f2[c] = 0.f; }
  nlc_rows_dev<D>(x, C, ct, b0, b1, fs, f1, f2);
  const double nb = (double)(b1 - b0);
  const double inb = 1.0 / nb;
  const double n = na + nb, wb = nb / n, wab = na * nb / n;
  for (i64 c = 0; c < C; ++c) {
    const double s1 = f1[c], r = fs[c];
    double M = (double)f2[c] - s1 * s1 * inb;
    M = M < 0 ? 0 : M;
    const double mb = r + s1 * inb;
    const double d = mb - ma[c];  // ma, Ma start zeroed: the first block gives ma = mb, Ma = M
    const bool fin = (r - r == 0) & (ma[c] - ma[c] == 0);  // both finite (x - x is NaN for Inf/NaN)
    // Inf/NaN in the data: mean Inf or NaN (the block mean r adds in), variance NaN.
    ma[c] = fin ? ma[c] + d * wb : ma[c] + r;
    Ma[c] = fin ? Ma[c] + (M + d * d * wab) : (double)NAN;
  }
  na = n;
}

// Rows of the first block: 128 for C <= 32, down to 16 rows for C >= 256
// (the two-pass is the slower part; 16 rows put K within std/4 of the mean).
static inline i64 nlc_head_rows(i64 C) { return imax(16, imin(128, 4096 / C)); }

// Rows [r0, r1) in one pass over memory: the first block by the two-pass
// above, whose exact means K[c] then shift every later row, read in memory
// order: s1 = sum(x - K), s2 = sum((x - K)^2) per channel, float32 over at
// most R rows, double beyond; mean = K + s1/k, M2 = s2 - s1^2/k, merged with
// the first block's (K is close to the mean: no cancellation).
// Two passes per block ran at 0.15-0.4 of the copy's bandwidth for C >= 256,
// whose tiles read the block column-wise, and at 0.7 of the read bandwidth
// for C = 32-64 (the second pass's arithmetic did not overlap the first
// pass's memory traffic). A non-finite block mean shifts by
// 0 (Inf and NaN reach the sums, as in the NCL statistics).
// fs, f1, f2: scratch of C floats; S1, S2: of C doubles.
template <class D>
static void nlc_stats_range(const typename D::T* x, i64 C, i64 r0, i64 r1, float* __restrict fs, float* __restrict f1,
                            float* __restrict f2, double* __restrict S1, double* __restrict S2, double& na,
                            double* __restrict ma, double* __restrict Ma) {
  const i64 R = nlc_rows_per_block(C);
  na = 0;
  const i64 h1 = imin(r1, r0 + nlc_head_rows(C));
  nlc_block_two_pass<D>(x, C, r0, h1, r1, fs, f1, f2, na, ma, Ma);
  if (h1 == r1) return;
  float* __restrict K = fs;
  for (i64 c = 0; c < C; ++c) {
    K[c] = __builtin_isfinite(ma[c]) ? (float)ma[c] : 0.f;
    S1[c] = 0;
    S2[c] = 0;
  }
  for (i64 b0 = h1; b0 < r1; b0 += R) {
    const i64 b1 = imin(r1, b0 + R);
    for (i64 c = 0; c < C; ++c) { f1[c] = 0.f; f2[c] = 0.f; }
    nlc_rows_dev<D>(x, C, 0, b0, b1, K, f1, f2);
    for (i64 c = 0; c < C; ++c) { S1[c] += f1[c]; S2[c] += f2[c]; }
  }
  // Chan's merge of (k, mb, M) into (na, ma, Ma) as chan_merge does it, its
  // weights shared by every channel (all have na and k elements): a loop
  // without calls or branches, vectorized.
  const double k = (double)(r1 - h1);
  const double n = na + k, wb = k / n, wab = na * k / n;
  for (i64 c = 0; c < C; ++c) {
    double M = S2[c] - S1[c] * S1[c] / k;
    M = M < 0 ? 0 : M;  // (false for NaN: NaN stays)
    const double mb = (double)K[c] + S1[c] / k;
    const double d = mb - ma[c];
    const bool fin = (mb - mb == 0) & (ma[c] - ma[c] == 0);  // both finite (x - x is NaN for Inf/NaN)
    ma[c] = fin ? ma[c] + d * wb : ma[c] + mb;
    Ma[c] = fin ? Ma[c] + (M + d * d * wab) : (double)NAN;
  }
  na = n;
}

// The gradient of relu(z) with z's output y: y <= 0 ? 0 : dy (as aten's
// threshold_backward), written to pz, which the elementwise pass reads.
template <class D, bool MASK>
static inline float nlc_grad(const typename D::T* __restrict pd, const typename D::T* __restrict py,
                             typename D::T* __restrict pz, i64 c) {
  float g = D::ld(pd[c]);
  if (MASK) {
    g = D::ld(py[c]) <= 0.f ? 0.f : g;
    pz[c] = D::st(g);
  }
  return g;
}

// Per block of R rows: f1 += g, f2 += g * (x - m) in float32, four rows per
// update of each sum ((r0 + r1) + (r2 + r3), then a pair, then a last row,
// as nlc_rows_dev), then into double.
template <class D, bool MASK>
static void nlc_reduce_range(const typename D::T* dy, const typename D::T* x, const typename D::T* y,
                             typename D::T* dz, i64 C, i64 r0, i64 r1, const float* __restrict m, float* __restrict f1,
                             float* __restrict f2, double* __restrict sdy, double* __restrict sdx) {
  typedef typename D::T T;
  const i64 R = nlc_rows_per_block(C);
  for (i64 c = 0; c < C; ++c) { sdy[c] = 0; sdx[c] = 0; }
  for (i64 b0 = r0; b0 < r1; b0 += R) {
    const i64 b1 = imin(r1, b0 + R);
    for (i64 c = 0; c < C; ++c) { f1[c] = 0.f; f2[c] = 0.f; }
    i64 r = b0;
    for (; r + 3 < b1; r += 4) {
      const T *__restrict d0 = dy + r * C, *__restrict d1 = d0 + C, *__restrict d2 = d1 + C, *__restrict d3 = d2 + C;
      const T *__restrict x0 = x + r * C, *__restrict x1 = x0 + C, *__restrict x2 = x1 + C, *__restrict x3 = x2 + C;
      const T* __restrict y0 = MASK ? y + r * C : y;
      T* __restrict z0 = MASK ? dz + r * C : dz;
      __builtin_prefetch((const char*)d0 + 4096);  // a page ahead (see nlc_tile_dev)
      __builtin_prefetch((const char*)x0 + 4096);
      for (i64 c = 0; c < C; ++c) {
        const float g0 = nlc_grad<D, MASK>(d0, y0, z0, c), g1 = nlc_grad<D, MASK>(d1, y0 + C, z0 + C, c);
        const float g2 = nlc_grad<D, MASK>(d2, y0 + 2 * C, z0 + 2 * C, c);
        const float g3 = nlc_grad<D, MASK>(d3, y0 + 3 * C, z0 + 3 * C, c);
        const float mc = m[c];
        f1[c] += (g0 + g1) + (g2 + g3);
        f2[c] += (g0 * (D::ld(x0[c]) - mc) + g1 * (D::ld(x1[c]) - mc)) +
                 (g2 * (D::ld(x2[c]) - mc) + g3 * (D::ld(x3[c]) - mc));
      }
    }
    for (; r + 1 < b1; r += 2) {
      const T *__restrict d0 = dy + r * C, *__restrict d1 = d0 + C;
      const T *__restrict x0 = x + r * C, *__restrict x1 = x0 + C;
      const T* __restrict y0 = MASK ? y + r * C : y;
      T* __restrict z0 = MASK ? dz + r * C : dz;
      for (i64 c = 0; c < C; ++c) {
        const float g0 = nlc_grad<D, MASK>(d0, y0, z0, c), g1 = nlc_grad<D, MASK>(d1, y0 + C, z0 + C, c);
        f1[c] += g0 + g1;
        f2[c] += g0 * (D::ld(x0[c]) - m[c]) + g1 * (D::ld(x1[c]) - m[c]);
      }
    }
    if (r < b1) {
      const T* __restrict d0 = dy + r * C;
      const T* __restrict x0 = x + r * C;
      const T* __restrict y0 = MASK ? y + r * C : y;
      T* __restrict z0 = MASK ? dz + r * C : dz;
      for (i64 c = 0; c < C; ++c) {
        const float g0 = nlc_grad<D, MASK>(d0, y0, z0, c);
        f1[c] += g0;
        f2[c] += g0 * (D::ld(x0[c]) - m[c]);
      }
    }
    for (i64 c = 0; c < C; ++c) { sdy[c] += f1[c]; sdx[c] += f2[c]; }
  }
}
