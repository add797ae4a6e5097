// Per-Gaussian EWA projection and SH colour, forward and backward (torch-free
// interface; bindings.cpp wraps it).
//
// The functions are those of gaussian_renderer/projection.py (project_gaussians)
// and utils/sh_utils.py (eval_sh), computed with the same operations in the same
// order, and their backward passes are the derivatives autograd takes of them
// (including its choices at the clamps). Their constants are passed in from
// Python, which stays the single source of truth.
#pragma once

#include <cstdint>

namespace cpu_rasterizer {

// Gaussians per chunk of the dynamic schedule of the per-Gaussian loops: the work is uniform,
// but a thread that the OS deschedules then holds no fixed share of it.
constexpr int64_t kGaussianChunk = 512;

// Constants and image size of projection.py.
struct ProjectionSettings {
    double near_plane;          // NEAR_PLANE: z at or below it is culled
    double eps_2d;              // EPS_2D: blur added to the 2D covariance diagonal
    double frustum_slack;       // FRUSTUM_SLACK of the Jacobian clamp
    double sigma_extent;        // SIGMA_EXTENT: reported radius in standard deviations
    double max_support_sigmas;  // MAX_SUPPORT_SIGMAS: the on-screen test's reach
    double compensation_floor;  // COMPENSATION_FLOOR of the antialiasing factor
    double eigen_gap_floor;     // EIGEN_GAP_FLOOR under the major-axis square root
    double norm_eps;            // NORM_EPS: quaternion norms are clamped at it
    int64_t width;
    int64_t height;
    bool antialiased;           // also the compensation factor
};

// One camera: world-to-camera matrix [4, 4] and intrinsics [3, 3], row-major.
template <typename scalar_t>
struct ProjectionCamera {
    scalar_t viewmat[16];
    scalar_t K[9];
};

// N Gaussians in world space (contiguous, row-major).
template <typename scalar_t>
struct GeometryArrays {
    const scalar_t* means;   // [N, 3]
    const scalar_t* scales;  // [N, 3] activated
    const scalar_t* quats;   // [N, 4] w first, any norm
    int64_t n;
};

// Forward outputs (every entry written); compensation only when antialiased.
template <typename scalar_t>
struct ProjectionOutputs {
    scalar_t* means2d;       // [N, 2]
    scalar_t* conics;        // [N, 3]
    scalar_t* depths;        // [N]
    int32_t* radii;          // [N]
    scalar_t* compensation;  // [N] or nullptr
};

// Gradients of the loss w.r.t. the forward outputs.
template <typename scalar_t>
struct ProjectionGradIn {
    const scalar_t* means2d;       // [N, 2]
    const scalar_t* conics;        // [N, 3]
    const scalar_t* depths;        // [N]
    const scalar_t* compensation;  // [N] or nullptr
};

// Gradients w.r.t. the geometry (every entry written).
template <typename scalar_t>
struct GeometryGrads {
    scalar_t* means;   // [N, 3]
    scalar_t* scales;  // [N, 3]
    scalar_t* quats;   // [N, 4]
};

template <typename scalar_t>
void project_forward(const GeometryArrays<scalar_t>& gs, const ProjectionCamera<scalar_t>& cam,
                     const ProjectionSettings& st, const ProjectionOutputs<scalar_t>& out, int num_threads);

template <typename scalar_t>
void project_backward(const GeometryArrays<scalar_t>& gs, const ProjectionCamera<scalar_t>& cam,
                      const ProjectionSettings& st, const ProjectionGradIn<scalar_t>& grad,
                      const GeometryGrads<scalar_t>& out, int num_threads);

// SH basis constants of sh_utils.py in basis order: SH_C0, SH_C1, SH_C2[0..4], SH_C3[0..6].
constexpr int kShConstants = 14;
constexpr int kShMaxDegree = 3;

struct ShSettings {
    int degree;                     // 0..kShMaxDegree: uses the first (degree + 1)^2 coefficients
    double constants[kShConstants];
    double norm_eps;                // NORM_EPS: direction norms are clamped at it
};

// sh [N, K, 3] coefficients (K >= (degree + 1)^2), dirs [N, 3] of any length.
template <typename scalar_t>
struct ShArrays {
    const scalar_t* sh;
    const scalar_t* dirs;
    int64_t n;
    int64_t k;
};

// colors [N, 3] = max(sum_b sh_b Y_b(dir / |dir|) + 0.5, 0).
template <typename scalar_t>
void sh_forward(const ShArrays<scalar_t>& in, const ShSettings& st, scalar_t* colors, int num_threads);

// d_sh [N, K, 3] (every entry written; zero beyond the degree) from grad_colors [N, 3].
template <typename scalar_t>
void sh_backward(const ShArrays<scalar_t>& in, const ShSettings& st, const scalar_t* grad_colors, scalar_t* d_sh,
                 int num_threads);

}  // namespace cpu_rasterizer
