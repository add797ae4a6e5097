// Fused L1 + D-SSIM colour loss and its gradient (ssim.h). One channel at a time;
// OpenMP over bands of rows.
//
// The separable blur runs like torch's: horizontally, then vertically. A band is
// walked top to bottom keeping the horizontally blurred rows r - R .. r + R in a
// ring of 2R + 1 slots (rows outside the image are zero: the zero padding), so each
// input row is blurred across once per band and each output row sums 2R + 1 slots.
// (Column tiles that keep the ring in the L1 cache measured slower: the images'
// rows are then read in short pieces.) The window is symmetric: taps k and 2R - k
// are added before their multiply.
//
// Forward, per row: the maps x, y, x^2, y^2, xy (x = img * m, y = gt * m) are
// blurred; SSIM and, with w = d loss / d S at the pixel, the partials
//   P_mu = w dS/dmu1 (e11, e12 held: through s11 and s12 too), P_11 = w dS/de11, P_12 = w dS/de12
// follow in registers. The partials are the only full-size scratch (three maps of
// the current channel). Backward, per row: the same blur of the partials (zero
// padding makes the symmetric blur its own adjoint), dL/dx = G*P_mu + 2x G*P_11 + y G*P_12,
// and dL/dimg = m dL/dx + the L1 term's sign(img - gt) m (1 - lambda) / count.
//
// The row kernels are compiled twice, portable and AVX2 (simd.h), and chosen at run
// time; column loops take one SIMD vector per step and run the same code on scalars
// for the last columns. Sums are kept per row and added in a fixed order: the
// result does not depend on the thread count.
#include "ssim.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "simd.h"

namespace cpu_rasterizer {
namespace {

enum Stat { kMu1, kMu2, kE11, kE22, kE12, kStats };  // the forward's blurred maps
enum Partial { kPMu, kP11, kP12, kPartials };        // d loss / d (mu1, e11, e12)

constexpr int64_t kBandsPerThread = 2;  // some balance on a busy machine ...
constexpr int64_t kMinBandRows = 32;    // ... while few rows are blurred twice (each band refills its ring)

// Rows per band for a team of threads.
inline int64_t band_rows(int64_t height, int team) {
    const int64_t bands = std::max<int64_t>(1, std::min(kBandsPerThread * team, height / kMinBandRows));
    return (height + bands - 1) / bands;
}

template <typename T>
struct Problem {
    DssimImages<T> in;
    std::vector<T> taps;  // [2 * radius + 1], symmetric
    int64_t radius;
    T c1, c2;
    T w_l1;               // (1 - lambda) / count: d loss / d |img - gt| per unit of mask
    T w_ssim;             // -lambda / count: d loss / d S per unit of mask
    bool with_ssim;       // lambda > 0
    std::vector<T> ones;  // [W]: the mask row when there is no mask
    T* partials;          // [kPartials, H, padded()] of the current channel (zero pads), or nullptr
    T* grad;              // [C, H, W] or nullptr

    int64_t plane() const { return in.height * in.width; }
    int64_t padded() const { return in.width + 2 * radius; }  // a row with `radius` zeros each side
    int64_t pixel(int64_t c, int64_t r) const { return c * plane() + r * in.width; }
    const T* mask_row(int64_t r) const { return in.mask ? in.mask + r * in.width : ones.data(); }
    T* partial_row(int q, int64_t r) const { return partials + (q * in.height + r) * padded(); }
};

// fn(U{}, j) over columns [0, n): one SIMD vector V per step, then the last columns as scalars T.
template <typename T, typename V, typename Fn>
CR_INLINE void over_columns(int64_t n, Fn&& fn) {
    constexpr int64_t kLanes = sizeof(V) / sizeof(T);
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) fn(V{}, j);
    for (; j < n; ++j) fn(T{}, j);
}

// The horizontally blurred rows around the current output row, rows outside the image zero.
template <typename T>
struct RowRing {
    std::vector<T> data;       // [slots, maps, W]
    std::vector<const T*> at;  // [slots]: rows r - R .. r + R of the last output row r
    int64_t slots, maps = 0, width, next = 0;
    int64_t last = std::numeric_limits<int64_t>::min();  // last output row; min: none yet

    RowRing(int64_t radius, int64_t max_maps, int64_t w)
        : data(static_cast<size_t>((2 * radius + 1) * max_maps * w)), at(2 * radius + 1),
          slots(2 * radius + 1), width(w) {}
    void reset(int64_t n_maps) {
        maps = n_maps;
        last = std::numeric_limits<int64_t>::min();
    }
    T* slot(int64_t row) { return data.data() + (((row % slots) + slots) % slots) * maps * width; }

    // Make rows r - R .. r + R available; fill(row, dst) blurs an image row into dst [maps, W].
    template <typename Fill>
    CR_INLINE void advance(int64_t r, int64_t radius, int64_t height, Fill&& fill) {
        if (r != last + 1) next = r - radius;
        for (; next <= r + radius; ++next) {
            T* dst = slot(next);
            if (next < 0 || next >= height)
                std::fill_n(dst, maps * width, T(0));
            else
                fill(next, dst);
        }
        for (int64_t k = 0; k < slots; ++k) at[k] = slot(r - radius + k);
        last = r;
    }
};

// Blur across: dst[q * W + j] = sum_k taps[k] src[q * src_stride + j + k] for kMaps maps (src zero padded).
template <int kMaps, typename T, typename V>
CR_INLINE void blur_across(const Problem<T>& p, const T* src, int64_t src_stride, T* dst) {
    const int64_t R = p.radius, W = p.in.width;
    const T* g = p.taps.data();
    over_columns<T, V>(W, [&](auto tag, int64_t j) __attribute__((always_inline)) {
        using U = decltype(tag);
        const T* s = src + j;
        U acc[kMaps];
        for (int q = 0; q < kMaps; ++q) acc[q] = g[R] * load<U>(s + q * src_stride + R);
        for (int64_t k = 0; k < R; ++k)
            for (int q = 0; q < kMaps; ++q)
                acc[q] += g[k] * (load<U>(s + q * src_stride + k) + load<U>(s + q * src_stride + 2 * R - k));
        for (int q = 0; q < kMaps; ++q) store(dst + q * W + j, acc[q]);
    });
}

// Blur down at columns j..: out[q] = sum_k taps[k] (slot k of the ring)[q, j] for kMaps maps.
template <int kMaps, typename U, typename T>
CR_INLINE void blur_down(const Problem<T>& p, const RowRing<T>& ring, int64_t j, U (&out)[kMaps]) {
    const int64_t R = p.radius, W = p.in.width;
    const T* g = p.taps.data();
    for (int q = 0; q < kMaps; ++q) out[q] = g[R] * load<U>(ring.at[R] + q * W + j);
    for (int64_t k = 0; k < R; ++k)
        for (int q = 0; q < kMaps; ++q)
            out[q] += g[k] * (load<U>(ring.at[k] + q * W + j) + load<U>(ring.at[2 * R - k] + q * W + j));
}

// Sum of n values, in double.
template <typename T>
double sum_in_double(const T* v, int64_t n) {
    using In = typename VecOf<T, 4 * sizeof(T)>::type;
    using Acc = typename VecOf<double, 4 * sizeof(double)>::type;
    Acc acc{};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) acc += __builtin_convertvector(load<In>(v + i), Acc);
    double s = hsum(acc);
    for (; i < n; ++i) s += static_cast<double>(v[i]);
    return s;
}

// L1 of row r of channel c: |img - gt| m into vals; its gradient sign(img - gt) m w_l1 into the grad row.
template <typename T, int kBytes>
CR_INLINE void l1_row(const Problem<T>& p, int64_t c, int64_t r, T* vals) {
    using V = typename Simd<T, kBytes>::V;
    const T *img = p.in.img + p.pixel(c, r), *gt = p.in.gt + p.pixel(c, r), *m = p.mask_row(r);
    T* grad = p.grad ? p.grad + p.pixel(c, r) : nullptr;
    over_columns<T, V>(p.in.width, [&](auto tag, int64_t j) __attribute__((always_inline)) {
        using U = decltype(tag);
        const U zero{}, d = load<U>(img + j) - load<U>(gt + j), mj = load<U>(m + j);
        store(vals + j, (d < zero ? -d : d) * mj);
        if (grad) {
            const U wm = p.w_l1 * mj;
            store(grad + j, d > zero ? wm : (d < zero ? -wm : zero));
        }
    });
}

// Image row i of channel c: its five statistics' maps into buf [kStats, padded()] (the pads stay
// zero), then blurred across into dst [kStats, W].
template <typename T, int kBytes>
CR_INLINE void blur_inputs_across(const Problem<T>& p, int64_t c, int64_t i, T* buf, T* dst) {
    using V = typename Simd<T, kBytes>::V;
    const int64_t stride = p.padded();
    const T *img = p.in.img + p.pixel(c, i), *gt = p.in.gt + p.pixel(c, i), *m = p.mask_row(i);
    T* out = buf + p.radius;
    over_columns<T, V>(p.in.width, [&](auto tag, int64_t j) __attribute__((always_inline)) {
        using U = decltype(tag);
        const U mj = load<U>(m + j), x = load<U>(img + j) * mj, y = load<U>(gt + j) * mj;
        store(out + kMu1 * stride + j, x);
        store(out + kMu2 * stride + j, y);
        store(out + kE11 * stride + j, x * x);
        store(out + kE22 * stride + j, y * y);
        store(out + kE12 * stride + j, x * y);
    });
    blur_across<kStats, T, V>(p, buf, stride, dst);
}

// Row r of channel c: the sums of |img - gt| m and S m into l1 / ssim; the L1 gradient and
// (when wanted) the partials P_mu, P_11, P_12.
template <typename T, int kBytes>
CR_INLINE void forward_row(const Problem<T>& p, int64_t c, int64_t r, RowRing<T>& ring, T* buf, T* vals, double* l1,
                           double* ssim) {
    using V = typename Simd<T, kBytes>::V;
    const int64_t W = p.in.width, R = p.radius;
    const T* m = p.mask_row(r);
    l1_row<T, kBytes>(p, c, r, vals);
    *l1 = sum_in_double(vals, W);
    if (!p.with_ssim) return;
    ring.advance(r, R, p.in.height, [&](int64_t i, T* dst) __attribute__((always_inline)) {
        blur_inputs_across<T, kBytes>(p, c, i, buf, dst);
    });
    T* part[kPartials] = {};
    for (int q = 0; q < kPartials && p.partials; ++q) part[q] = p.partial_row(q, r) + R;
    over_columns<T, V>(W, [&](auto tag, int64_t j) __attribute__((always_inline)) {
        using U = decltype(tag);
        U s[kStats];
        blur_down<kStats>(p, ring, j, s);
        const U mu1 = s[kMu1], mu2 = s[kMu2];
        const U mu11 = mu1 * mu1, mu22 = mu2 * mu2, mu12 = mu1 * mu2;
        const U s11 = s[kE11] - mu11, s22 = s[kE22] - mu22, s12 = s[kE12] - mu12;
        const U a = T(2) * mu12 + p.c1, b = T(2) * s12 + p.c2;  // S = a b / (cc d)
        const U cc = mu11 + mu22 + p.c1, d = s11 + s22 + p.c2;
        const U den = cc * d, S = (a * b) / den, mj = load<U>(m + j);
        store(vals + j, S * mj);
        if (!p.partials) return;
        const U q = (p.w_ssim * mj) / den;  // w / den
        store(part[kPMu] + j, T(2) * q * (mu2 * (b - a) + mu1 * S * (cc - d)));
        store(part[kP11] + j, -(q * S * cc));
        store(part[kP12] + j, T(2) * q * a);
    });
    for (int q = 0; q < kPartials && p.partials; ++q) {  // the zero padding of the partials' rows
        std::fill_n(part[q] - R, R, T(0));
        std::fill_n(part[q] + W, R, T(0));
    }
    *ssim = sum_in_double(vals, W);
}

// Row r of channel c: adds the D-SSIM term's gradient (the blurred partials) to the grad row.
template <typename T, int kBytes>
CR_INLINE void backward_row(const Problem<T>& p, int64_t c, int64_t r, RowRing<T>& ring) {
    using V = typename Simd<T, kBytes>::V;
    const int64_t plane_stride = p.in.height * p.padded();
    ring.advance(r, p.radius, p.in.height, [&](int64_t i, T* dst) __attribute__((always_inline)) {
        blur_across<kPartials, T, V>(p, p.partial_row(0, i), plane_stride, dst);
    });
    const T *img = p.in.img + p.pixel(c, r), *gt = p.in.gt + p.pixel(c, r), *m = p.mask_row(r);
    T* grad = p.grad + p.pixel(c, r);
    over_columns<T, V>(p.in.width, [&](auto tag, int64_t j) __attribute__((always_inline)) {
        using U = decltype(tag);
        U g[kPartials];
        blur_down<kPartials>(p, ring, j, g);
        const U mj = load<U>(m + j), x = load<U>(img + j) * mj, y = load<U>(gt + j) * mj;
        const U dx = g[kPMu] + T(2) * x * g[kP11] + y * g[kP12];
        store(grad + j, load<U>(grad + j) + dx * mj);
    });
}

template <typename T>
using ForwardRowFn = void (*)(const Problem<T>&, int64_t, int64_t, RowRing<T>&, T*, T*, double*, double*);
template <typename T>
using BackwardRowFn = void (*)(const Problem<T>&, int64_t, int64_t, RowRing<T>&);

template <typename T>
void forward_row_portable(const Problem<T>& p, int64_t c, int64_t r, RowRing<T>& ring, T* buf, T* vals, double* l1,
                          double* ssim) {
    forward_row<T, kPortableBytes>(p, c, r, ring, buf, vals, l1, ssim);
}
template <typename T>
void backward_row_portable(const Problem<T>& p, int64_t c, int64_t r, RowRing<T>& ring) {
    backward_row<T, kPortableBytes>(p, c, r, ring);
}
#if CPU_RASTERIZER_X86
template <typename T>
CR_TARGET_AVX2 void forward_row_avx2(const Problem<T>& p, int64_t c, int64_t r, RowRing<T>& ring, T* buf, T* vals,
                                     double* l1, double* ssim) {
    forward_row<T, kAvx2Bytes>(p, c, r, ring, buf, vals, l1, ssim);
}
template <typename T>
CR_TARGET_AVX2 void backward_row_avx2(const Problem<T>& p, int64_t c, int64_t r, RowRing<T>& ring) {
    backward_row<T, kAvx2Bytes>(p, c, r, ring);
}
#endif

template <typename T>
struct RowKernels {
    ForwardRowFn<T> forward;
    BackwardRowFn<T> backward;
};

// The AVX2 build when `isa` allows it and the CPU has AVX2, else the portable one.
template <typename T>
RowKernels<T> pick_row_kernels(Isa isa) {
#if CPU_RASTERIZER_X86
    if (isa != Isa::kGeneric && avx2_supported()) return {&forward_row_avx2<T>, &backward_row_avx2<T>};
#endif
    (void)isa;
    return {&forward_row_portable<T>, &backward_row_portable<T>};
}

// C * sum(mask) clamped at 1, as masked_mean divides (all C H W pixels without a mask).
template <typename T>
double pixel_count(const DssimImages<T>& in) {
    if (!in.mask) return static_cast<double>(in.channels * in.height * in.width);
    return std::max(1.0, static_cast<double>(in.channels) * sum_in_double(in.mask, in.height * in.width));
}

}  // namespace

template <typename scalar_t>
double l1_dssim(const DssimImages<scalar_t>& in, const DssimSettings& st, scalar_t* grad, Isa isa,
                int num_threads) {
    using T = scalar_t;
    const int64_t C = in.channels, H = in.height, W = in.width, R = st.radius;
    const double count = pixel_count(in);
    const bool with_ssim = st.lambda != 0.0;
    // every entry is written before it is read (pads included): no zero fill
    std::unique_ptr<T[]> partials(grad && with_ssim ? new T[kPartials * H * (W + 2 * R)] : nullptr);
    Problem<T> p{in,
                 std::vector<T>(st.taps, st.taps + 2 * R + 1),
                 R,
                 static_cast<T>(st.c1),
                 static_cast<T>(st.c2),
                 static_cast<T>((1.0 - st.lambda) / count),
                 static_cast<T>(-st.lambda / count),
                 with_ssim,
                 std::vector<T>(in.mask ? 0 : W, T(1)),
                 partials.get(),
                 grad};
    const RowKernels<T> kernels = pick_row_kernels<T>(isa);
    std::vector<double> l1_sums(C * H, 0.0), ssim_sums(C * H, 0.0);  // per row
    const int team = threads_for(C * H * W, num_threads);
    const int64_t rows = band_rows(H, team), bands = (H + rows - 1) / rows;
#pragma omp parallel num_threads(team)
    {
        RowRing<T> ring(R, kStats, W);
        std::vector<T> buf(kStats * p.padded(), T(0)), vals(W);  // the pads of buf stay 0
        for (int64_t c = 0; c < C; ++c) {
            for (int phase = 0; phase < (p.partials ? 2 : 1); ++phase) {  // forward, then backward
#pragma omp for schedule(dynamic, 1)
                for (int64_t band = 0; band < bands; ++band) {
                    ring.reset(phase == 0 ? int64_t(kStats) : int64_t(kPartials));
                    for (int64_t r = band * rows; r < std::min(H, (band + 1) * rows); ++r) {
                        if (phase == 0)
                            kernels.forward(p, c, r, ring, buf.data(), vals.data(), &l1_sums[c * H + r],
                                            &ssim_sums[c * H + r]);
                        else
                            kernels.backward(p, c, r, ring);
                    }
                }
            }
        }
    }
    const double l1 = sum_in_double(l1_sums.data(), C * H) / count;
    if (!with_ssim) return l1;
    const double ssim = sum_in_double(ssim_sums.data(), C * H) / count;
    return (1.0 - st.lambda) * l1 + st.lambda * (1.0 - ssim);
}

template double l1_dssim<float>(const DssimImages<float>&, const DssimSettings&, float*, Isa, int);
template double l1_dssim<double>(const DssimImages<double>&, const DssimSettings&, double*, Isa, int);

}  // namespace cpu_rasterizer
