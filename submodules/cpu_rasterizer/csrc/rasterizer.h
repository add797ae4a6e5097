// Shared declarations of the CPU tile rasterizer.
//
// The compositing contract is the one in gaussian_renderer/backends/common.py:
// Gaussians are binned into tiles by their integer pixel radius, composited
// front to back in (stable) depth order with alpha = min(alpha_max, o * exp(power)),
// skipped where power > 0 or alpha < alpha_min, and a pixel stops before the
// Gaussian that would push its transmittance below t_min.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <vector>

namespace cpu_rasterizer {

// Thresholds of the contract, passed in from Python (common.py is the single
// source of truth) and rounded to the working precision like torch does when
// it compares a float tensor with a Python scalar.
template <typename scalar_t>
struct Thresholds {
    scalar_t alpha_max;
    scalar_t alpha_min;
    scalar_t t_min;
};

// Image / tile grid geometry.
struct Grid {
    int64_t width;
    int64_t height;
    int64_t tile;
    int64_t tiles_x;
    int64_t tiles_y;

    Grid(int64_t w, int64_t h, int64_t t)
        : width(w), height(h), tile(t), tiles_x((w + t - 1) / t), tiles_y((h + t - 1) / t) {}
    int64_t n_tiles() const { return tiles_x * tiles_y; }
    int64_t tile_pixels() const { return tile * tile; }
};

// Result of binning: per-tile front-to-back Gaussian lists (CSR layout).
struct Bins {
    torch::Tensor gauss_ids;  // [P] int32, grouped by tile, front to back
    torch::Tensor offsets;    // [T + 1] int64, tile t owns gauss_ids[offsets[t]:offsets[t+1]]
};

// Sort (tile, Gaussian) pairs by tile, then depth (stable); same tile sets as
// common.tile_rect (identical float operations).
Bins bin_gaussians(const torch::Tensor& means2d, const torch::Tensor& radii, const torch::Tensor& depths,
                   const Grid& grid, int num_threads);

// Forward pass. Returns (image [C,H,W], alpha [1,H,W], final_T [H,W], n_contrib [H,W] int32).
std::vector<torch::Tensor> composite_forward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                             const torch::Tensor& opacities, const torch::Tensor& colors,
                                             const Bins& bins, const Grid& grid, double alpha_max,
                                             double alpha_min, double t_min, int num_threads);

// Backward pass. Returns (d_means2d [N,2], d_conics [N,3], d_opacities [N], d_colors [N,C]).
std::vector<torch::Tensor> composite_backward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                              const torch::Tensor& opacities, const torch::Tensor& colors,
                                              const Bins& bins, const torch::Tensor& final_t,
                                              const torch::Tensor& n_contrib, const torch::Tensor& grad_image,
                                              const torch::Tensor& grad_alpha, const Grid& grid, double alpha_max,
                                              double alpha_min, double t_min, int num_threads);

}  // namespace cpu_rasterizer
