// Per-pixel ops around the compositing (image_ops.h): simple loops the compiler vectorises, OpenMP
// over blocks of pixels.
#include "image_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "rasterizer.h"
#include "simd.h"

namespace cpu_rasterizer {
namespace {

constexpr int64_t kSumBlock = 4096;  // pixels per partial sum (fixed: results independent of the threads)

inline int64_t blocks_of(int64_t pixels) { return (pixels + kSumBlock - 1) / kSumBlock; }

}  // namespace

template <typename T>
void finish_forward(const FinishPlanes<T>& in, T alpha_floor, T* image, T* depth, int num_threads) {
    const int64_t P = in.pixels;
    const T* sums = in.out + in.depth_channel * P;
    const int team = threads_for(P, num_threads);
#pragma omp parallel for schedule(static) num_threads(team)
    for (int64_t b = 0; b < blocks_of(P); ++b) {
        const int64_t lo = b * kSumBlock, hi = std::min(P, lo + kSumBlock);
        for (int c = 0; c < kColorChannels; ++c) {
            const T* rgb = in.out + c * P;
            T* dst = image + c * P;
            const T bg = in.bg[c];
            for (int64_t i = lo; i < hi; ++i) dst[i] = rgb[i] + (T(1) - in.alpha[i]) * bg;
        }
        for (int64_t i = lo; i < hi; ++i) depth[i] = sums[i] / std::max(in.alpha[i], alpha_floor);
    }
}

template <typename T>
void finish_backward(const FinishPlanes<T>& in, T alpha_floor, const T* grad_image, const T* grad_depth, T* grad_out,
                     T* grad_alpha, int num_threads) {
    const int64_t P = in.pixels;
    const T* sums = in.out + in.depth_channel * P;
    T* grad_sums = grad_out + in.depth_channel * P;
    const int team = threads_for(P, num_threads);
#pragma omp parallel for schedule(static) num_threads(team)
    for (int64_t b = 0; b < blocks_of(P); ++b) {
        const int64_t lo = b * kSumBlock, hi = std::min(P, lo + kSumBlock);
        std::fill(grad_alpha + lo, grad_alpha + hi, T(0));
        for (int c = 0; c < kColorChannels; ++c) {
            T* dst = grad_out + c * P;
            if (!grad_image) {
                std::fill(dst + lo, dst + hi, T(0));
                continue;
            }
            const T* g = grad_image + c * P;
            const T bg = in.bg[c];
            for (int64_t i = lo; i < hi; ++i) {
                dst[i] = g[i];
                grad_alpha[i] -= g[i] * bg;
            }
        }
        if (!grad_depth) {
            std::fill(grad_sums + lo, grad_sums + hi, T(0));
            continue;
        }
        for (int64_t i = lo; i < hi; ++i) {
            const T a = in.alpha[i], clamped = std::max(a, alpha_floor), g = grad_depth[i] / clamped;
            grad_sums[i] = g;
            // d (s / a) / d a = -(s / a) / a where the clamp passes alpha (a > floor, as torch's clamp_min), else 0
            const T slope = g * (sums[i] / clamped), passed = a > alpha_floor ? T(1) : T(0);
            grad_alpha[i] -= slope * passed;
        }
    }
}

namespace {

// v = (gt > 0) m at pixel i (m = 1 without a mask; a template argument, so the loops have no branch).
template <bool kMask, typename T>
CR_INLINE T depth_weight(const DepthL1Maps<T>& in, int64_t i) {
    const T valid = in.gt[i] > T(0) ? T(1) : T(0);
    if constexpr (kMask) return valid * in.mask[i];
    return valid;
}

// Sums of |pred - gt| v, gt v and v over pixels [lo, hi), in double: kLanes running sums each (lane
// i % kLanes, so the compiler can vectorise), added in lane order.
template <bool kMask, typename T>
void depth_sums(const DepthL1Maps<T>& in, int64_t lo, int64_t hi, double* s_abs, double* s_gt, double* s_v) {
    constexpr int kLanes = 8;
    double a[kLanes] = {}, g[kLanes] = {}, w[kLanes] = {};
    int64_t i = lo;
    for (; i + kLanes <= hi; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
            const T v = depth_weight<kMask>(in, i + l);
            a[l] += static_cast<double>(std::abs(in.pred[i + l] - in.gt[i + l]) * v);
            g[l] += static_cast<double>(in.gt[i + l] * v);
            w[l] += static_cast<double>(v);
        }
    }
    for (int l = 0; i < hi; ++i, ++l) {
        const T v = depth_weight<kMask>(in, i);
        a[l] += static_cast<double>(std::abs(in.pred[i] - in.gt[i]) * v);
        g[l] += static_cast<double>(in.gt[i] * v);
        w[l] += static_cast<double>(v);
    }
    *s_abs = *s_gt = *s_v = 0.0;
    for (int l = 0; l < kLanes; ++l) {
        *s_abs += a[l];
        *s_gt += g[l];
        *s_v += w[l];
    }
}

// grad over pixels [lo, hi): sign(pred - gt) v k (sign(0) = 0, as torch's abs).
template <bool kMask, typename T>
void depth_grad(const DepthL1Maps<T>& in, int64_t lo, int64_t hi, T k, T* grad) {
    for (int64_t i = lo; i < hi; ++i) {
        const T d = in.pred[i] - in.gt[i];
        const T sign = (d > T(0) ? T(1) : T(0)) - (d < T(0) ? T(1) : T(0));
        grad[i] = sign * (k * depth_weight<kMask>(in, i));
    }
}

}  // namespace

template <typename T>
double depth_l1(const DepthL1Maps<T>& in, double scale_floor, T* grad, int num_threads) {
    const int64_t P = in.pixels, blocks = blocks_of(P);
    const bool masked = in.mask != nullptr;
    std::vector<double> abs_sums(blocks), gt_sums(blocks), weights(blocks);
    const int team = threads_for(P, num_threads);
#pragma omp parallel for schedule(static) num_threads(team)
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t lo = b * kSumBlock, hi = std::min(P, lo + kSumBlock);
        (masked ? depth_sums<true, T> : depth_sums<false, T>)(in, lo, hi, &abs_sums[b], &gt_sums[b], &weights[b]);
    }
    double s_abs = 0.0, s_gt = 0.0, s_v = 0.0;
    for (int64_t b = 0; b < blocks; ++b) {
        s_abs += abs_sums[b];
        s_gt += gt_sums[b];
        s_v += weights[b];
    }
    const double n = std::max(s_v, 1.0), scale = std::max(s_gt / n, scale_floor);
    if (grad) {
        const T k = static_cast<T>(1.0 / (n * scale));  // d loss / d |pred - gt| per unit of v
#pragma omp parallel for schedule(static) num_threads(team)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t lo = b * kSumBlock, hi = std::min(P, lo + kSumBlock);
            (masked ? depth_grad<true, T> : depth_grad<false, T>)(in, lo, hi, k, grad);
        }
    }
    return s_abs / n / scale;
}

template void finish_forward<float>(const FinishPlanes<float>&, float, float*, float*, int);
template void finish_forward<double>(const FinishPlanes<double>&, double, double*, double*, int);
template void finish_backward<float>(const FinishPlanes<float>&, float, const float*, const float*, float*, float*, int);
template void finish_backward<double>(const FinishPlanes<double>&, double, const double*, const double*, double*,
                                      double*, int);
template double depth_l1<float>(const DepthL1Maps<float>&, double, float*, int);
template double depth_l1<double>(const DepthL1Maps<double>&, double, double*, int);

}  // namespace cpu_rasterizer
