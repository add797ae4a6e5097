// The Gaussians' world-space geometry at a time t from their trained parameters, forward and backward
// (torch-free interface; geometry_binding.cpp wraps it). The function is scene/deformation.py's
// gaussian_geometry:
//   offsets [10] = sum_b phi_b w_b             (deformable models: B bump weights w_b [10] per Gaussian)
//   means  = xyz + offsets[0:3]
//   quats  = q / max(|q|, norm_eps),  q = raw quaternion + offsets[3:7]
//   scales = exp(log scales + offsets[7:10])
// with phi_b the bump activations at t, computed in Python. The backward pass is the derivative autograd
// takes of that torch code, its choice at the norm clamp included.
#pragma once

#include <cstdint>

namespace cpu_rasterizer {

constexpr int kDeformChannels = 10;  // scene/deformation.DEFORM_CHANNELS: 3 position, 4 rotation, 3 log-scale
constexpr int kDeformXyz = 0, kDeformQuat = 3, kDeformScale = 7;  // first channel of each offset

// N Gaussians' trained parameters (contiguous, row-major).
template <typename scalar_t>
struct RawGeometry {
    const scalar_t* xyz;         // [N, 3]
    const scalar_t* log_scales;  // [N, 3]
    const scalar_t* quats;       // [N, 4] w first, any norm
    const scalar_t* weights;     // [N, B, kDeformChannels] bump weights, or nullptr (B = 0: no deformation)
    const scalar_t* phi;         // [B] bump activations at t
    int64_t n;
    int64_t bumps;  // B
};

// The geometry (every entry written).
template <typename scalar_t>
struct GeometryOut {
    scalar_t* means;   // [N, 3]
    scalar_t* scales;  // [N, 3]
    scalar_t* quats;   // [N, 4] unit length (0 for a zero quaternion)
};

// Gradients w.r.t. the geometry.
template <typename scalar_t>
struct GeometryGradIn {
    const scalar_t* means;   // [N, 3]
    const scalar_t* scales;  // [N, 3]
    const scalar_t* quats;   // [N, 4]
};

// Gradients w.r.t. the parameters (every entry written).
template <typename scalar_t>
struct RawGeometryGrads {
    scalar_t* xyz;         // [N, 3]
    scalar_t* log_scales;  // [N, 3]
    scalar_t* quats;       // [N, 4]
    scalar_t* weights;     // [N, B, kDeformChannels], or nullptr when B = 0
};

template <typename scalar_t>
void geometry_forward(const RawGeometry<scalar_t>& in, double norm_eps, const GeometryOut<scalar_t>& out,
                      int num_threads);

template <typename scalar_t>
void geometry_backward(const RawGeometry<scalar_t>& in, double norm_eps, const GeometryGradIn<scalar_t>& grad,
                       const RawGeometryGrads<scalar_t>& out, int num_threads);

}  // namespace cpu_rasterizer
