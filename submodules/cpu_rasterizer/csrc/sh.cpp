// Colour from spherical harmonics (sh_utils.eval_sh), forward and backward,
// OpenMP over Gaussians. The basis is recomputed in the backward pass.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "projection.h"
#include "rasterizer.h"

namespace cpu_rasterizer {
namespace {

constexpr int kShMaxBases = (kShMaxDegree + 1) * (kShMaxDegree + 1);
constexpr int kRgb = 3;

inline int sh_bases(int degree) { return (degree + 1) * (degree + 1); }

// Y [bases] of the direction d / max(|d|, eps), in sh_utils.sh_basis's order and operations.
template <typename T>
inline void sh_basis(const T* d, const ShSettings& st, T* Y) {
    const T norm = std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
    const T scale = std::max(norm, static_cast<T>(st.norm_eps));
    const T x = d[0] / scale, y = d[1] / scale, z = d[2] / scale;
    const double* C = st.constants;
    auto c = [C](int i) { return static_cast<T>(C[i]); };
    auto neg = [C](int i) { return static_cast<T>(-C[i]); };
    Y[0] = c(0);
    if (st.degree < 1) return;
    Y[1] = neg(1) * y;
    Y[2] = c(1) * z;
    Y[3] = neg(1) * x;
    if (st.degree < 2) return;
    const T xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
    Y[4] = c(2) * xy;
    Y[5] = c(3) * yz;
    Y[6] = c(4) * (T(2) * zz - xx - yy);
    Y[7] = c(5) * xz;
    Y[8] = c(6) * (xx - yy);
    if (st.degree < 3) return;
    Y[9] = c(7) * y * (T(3) * xx - yy);
    Y[10] = c(8) * xy * z;
    Y[11] = c(9) * y * (T(4) * zz - xx - yy);
    Y[12] = c(10) * z * (T(2) * zz - T(3) * xx - T(3) * yy);
    Y[13] = c(11) * x * (T(4) * zz - xx - yy);
    Y[14] = c(12) * z * (xx - yy);
    Y[15] = c(13) * x * (xx - T(3) * yy);
}

// sum_b Y_b sh_b[ch] + 0.5, before the clamp at 0.
template <typename T>
inline T sh_sum(const T* Y, const T* sh, int bases, int ch) {
    T s(0);
    for (int b = 0; b < bases; ++b) s += Y[b] * sh[b * kRgb + ch];
    return s + T(0.5);
}

// fn(i, Y, sh_i) for every Gaussian i (Y: its basis, sh_i: its [K, 3] coefficients), OpenMP over Gaussians.
template <typename scalar_t, typename Fn>
void for_each_basis(const ShArrays<scalar_t>& in, const ShSettings& st, int num_threads, Fn fn) {
#pragma omp parallel for num_threads(threads_for(in.n, num_threads)) schedule(dynamic, kGaussianChunk)
    for (int64_t i = 0; i < in.n; ++i) {
        scalar_t Y[kShMaxBases];
        sh_basis(in.dirs + 3 * i, st, Y);
        fn(i, Y, in.sh + i * in.k * kRgb);
    }
}

}  // namespace

template <typename scalar_t>
void sh_forward(const ShArrays<scalar_t>& in, const ShSettings& st, scalar_t* colors, int num_threads) {
    const int bases = sh_bases(st.degree);
    for_each_basis(in, st, num_threads, [&](int64_t i, const scalar_t* Y, const scalar_t* sh) {
        for (int ch = 0; ch < kRgb; ++ch) {
            const scalar_t v = sh_sum(Y, sh, bases, ch);
            colors[kRgb * i + ch] = v < scalar_t(0) ? scalar_t(0) : v;  // NaN stays NaN, as clamp_min
        }
    });
}

template <typename scalar_t>
void sh_backward(const ShArrays<scalar_t>& in, const ShSettings& st, const scalar_t* grad_colors, scalar_t* d_sh,
                 int num_threads) {
    const int bases = sh_bases(st.degree);
    for_each_basis(in, st, num_threads, [&](int64_t i, const scalar_t* Y, const scalar_t* sh) {
        scalar_t g[kRgb];
        for (int ch = 0; ch < kRgb; ++ch)  // clamp_min passes the gradient where the sum is >= 0
            g[ch] = sh_sum(Y, sh, bases, ch) >= scalar_t(0) ? grad_colors[kRgb * i + ch] : scalar_t(0);
        scalar_t* out = d_sh + i * in.k * kRgb;
        for (int b = 0; b < bases; ++b)
            for (int ch = 0; ch < kRgb; ++ch) out[b * kRgb + ch] = Y[b] * g[ch];
        std::fill(out + bases * kRgb, out + in.k * kRgb, scalar_t(0));
    });
}

template void sh_forward<float>(const ShArrays<float>&, const ShSettings&, float*, int);
template void sh_forward<double>(const ShArrays<double>&, const ShSettings&, double*, int);
template void sh_backward<float>(const ShArrays<float>&, const ShSettings&, const float*, float*, int);
template void sh_backward<double>(const ShArrays<double>&, const ShSettings&, const double*, double*, int);

}  // namespace cpu_rasterizer
