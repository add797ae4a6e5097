// The Gaussians' geometry at a time t (geometry.h), forward and backward, OpenMP over Gaussians. The
// backward pass recomputes the forward's intermediates instead of storing them.
#include "geometry.h"

#include <algorithm>
#include <cmath>

#include "projection.h"
#include "quaternion.h"
#include "rasterizer.h"

namespace cpu_rasterizer {
namespace {

constexpr int kQuat = 4;
constexpr int kVec3 = 3;

// One Gaussian's forward intermediates.
template <typename T>
struct Activated {
    T offsets[kDeformChannels];  // sum_b phi_b w_b (0 without deformation)
    UnitQuat<T> unit;            // (raw quaternion + offsets) / max(|.|, norm_eps)
    T scales[kVec3];             // exp(log scale + offset)
};

template <typename T>
inline void activate(const RawGeometry<T>& in, int64_t i, T norm_eps, Activated<T>& a) {
    std::fill(a.offsets, a.offsets + kDeformChannels, T(0));
    const T* quat = in.quats + kQuat * i;
    const T* log_scale = in.log_scales + kVec3 * i;
    if (in.bumps == 0) {  // no offsets added: the values are exactly those of the undeformed activations
        a.unit = unit_quat(quat, norm_eps);
        for (int k = 0; k < kVec3; ++k) a.scales[k] = std::exp(log_scale[k]);
        return;
    }
    const T* w = in.weights + i * in.bumps * kDeformChannels;
    for (int64_t b = 0; b < in.bumps; ++b, w += kDeformChannels)
        for (int c = 0; c < kDeformChannels; ++c) a.offsets[c] += in.phi[b] * w[c];
    T q[kQuat];
    for (int k = 0; k < kQuat; ++k) q[k] = quat[k] + a.offsets[kDeformQuat + k];
    a.unit = unit_quat(q, norm_eps);
    for (int k = 0; k < kVec3; ++k) a.scales[k] = std::exp(log_scale[k] + a.offsets[kDeformScale + k]);
}

// fn(i, a) for every Gaussian i with its intermediates a.
template <typename T, typename Fn>
void for_each_activated(const RawGeometry<T>& in, double norm_eps, int num_threads, Fn fn) {
    const T eps = static_cast<T>(norm_eps);
#pragma omp parallel for num_threads(threads_for(in.n, num_threads)) schedule(dynamic, kGaussianChunk)
    for (int64_t i = 0; i < in.n; ++i) {
        Activated<T> a;
        activate(in, i, eps, a);
        fn(i, a);
    }
}

}  // namespace

template <typename scalar_t>
void geometry_forward(const RawGeometry<scalar_t>& in, double norm_eps, const GeometryOut<scalar_t>& out,
                      int num_threads) {
    for_each_activated(in, norm_eps, num_threads, [&](int64_t i, const Activated<scalar_t>& a) {
        const scalar_t* xyz = in.xyz + kVec3 * i;
        for (int k = 0; k < kVec3; ++k) {
            out.means[kVec3 * i + k] = in.bumps == 0 ? xyz[k] : xyz[k] + a.offsets[kDeformXyz + k];
            out.scales[kVec3 * i + k] = a.scales[k];
        }
        std::copy_n(a.unit.q, kQuat, out.quats + kQuat * i);
    });
}

template <typename scalar_t>
void geometry_backward(const RawGeometry<scalar_t>& in, double norm_eps, const GeometryGradIn<scalar_t>& grad,
                       const RawGeometryGrads<scalar_t>& out, int num_threads) {
    const scalar_t eps = static_cast<scalar_t>(norm_eps);
    for_each_activated(in, norm_eps, num_threads, [&](int64_t i, const Activated<scalar_t>& a) {
        scalar_t d_offsets[kDeformChannels];
        for (int k = 0; k < kVec3; ++k) {
            d_offsets[kDeformXyz + k] = grad.means[kVec3 * i + k];
            d_offsets[kDeformScale + k] = grad.scales[kVec3 * i + k] * a.scales[k];  // d exp(x) = exp(x) dx
        }
        unit_quat_backward(a.unit, grad.quats + kQuat * i, eps, d_offsets + kDeformQuat);

        for (int k = 0; k < kVec3; ++k) {
            out.xyz[kVec3 * i + k] = d_offsets[kDeformXyz + k];
            out.log_scales[kVec3 * i + k] = d_offsets[kDeformScale + k];
        }
        for (int k = 0; k < kQuat; ++k) out.quats[kQuat * i + k] = d_offsets[kDeformQuat + k];
        if (in.bumps == 0) return;
        scalar_t* d_w = out.weights + i * in.bumps * kDeformChannels;
        for (int64_t b = 0; b < in.bumps; ++b, d_w += kDeformChannels)
            for (int c = 0; c < kDeformChannels; ++c) d_w[c] = in.phi[b] * d_offsets[c];
    });
}

template void geometry_forward<float>(const RawGeometry<float>&, double, const GeometryOut<float>&, int);
template void geometry_forward<double>(const RawGeometry<double>&, double, const GeometryOut<double>&, int);
template void geometry_backward<float>(const RawGeometry<float>&, double, const GeometryGradIn<float>&,
                                       const RawGeometryGrads<float>&, int);
template void geometry_backward<double>(const RawGeometry<double>&, double, const GeometryGradIn<double>&,
                                        const RawGeometryGrads<double>&, int);

}  // namespace cpu_rasterizer
