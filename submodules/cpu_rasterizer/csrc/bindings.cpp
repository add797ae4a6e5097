// Python bindings with input validation (every check names the offending argument).
#include "rasterizer.h"

namespace cpu_rasterizer {
namespace {

void check_cpu_contiguous(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor (got ", t.device(), ")");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_float(const torch::Tensor& t, const char* name, torch::ScalarType dtype) {
    check_cpu_contiguous(t, name);
    TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, " like colors (got ", t.scalar_type(), ")");
}

void check_shape(const torch::Tensor& t, const char* name, std::initializer_list<int64_t> shape) {
    TORCH_CHECK(t.sizes() == torch::IntArrayRef(shape), name, " must have shape ", torch::IntArrayRef(shape),
                " (got ", t.sizes(), ")");
}

Grid checked_grid(int64_t width, int64_t height, int64_t tile) {
    TORCH_CHECK(width > 0 && height > 0, "image size must be positive (got ", width, "x", height, ")");
    TORCH_CHECK(tile > 0 && tile <= 256, "tile must be in [1, 256] (got ", tile, ")");
    return Grid(width, height, tile);
}

// Checks shared by forward and backward; returns N.
int64_t check_gaussians(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& opacities,
                        const torch::Tensor& colors) {
    check_cpu_contiguous(colors, "colors");
    TORCH_CHECK(colors.scalar_type() == torch::kFloat32 || colors.scalar_type() == torch::kFloat64,
                "colors must be float32 or float64 (got ", colors.scalar_type(), ")");
    TORCH_CHECK(colors.dim() == 2, "colors must be [N, C] (got ", colors.sizes(), ")");
    const int64_t n = colors.size(0);
    TORCH_CHECK(n < (int64_t(1) << 31), "too many Gaussians for int32 indices: ", n);
    const auto dtype = colors.scalar_type();
    check_float(means2d, "means2d", dtype);
    check_float(conics, "conics", dtype);
    check_float(opacities, "opacities", dtype);
    check_shape(means2d, "means2d", {n, 2});
    check_shape(conics, "conics", {n, 3});
    check_shape(opacities, "opacities", {n});
    return n;
}

Bins checked_bins(const torch::Tensor& gauss_ids, const torch::Tensor& offsets, const Grid& grid, int64_t n) {
    check_cpu_contiguous(gauss_ids, "gauss_ids");
    check_cpu_contiguous(offsets, "offsets");
    TORCH_CHECK(gauss_ids.scalar_type() == torch::kInt32 && gauss_ids.dim() == 1, "gauss_ids must be 1-D int32");
    TORCH_CHECK(offsets.scalar_type() == torch::kInt64, "offsets must be int64");
    check_shape(offsets, "offsets", {grid.n_tiles() + 1});
    TORCH_CHECK(offsets[grid.n_tiles()].item<int64_t>() == gauss_ids.numel(), "offsets do not match gauss_ids");
    if (gauss_ids.numel() > 0)
        TORCH_CHECK(gauss_ids.min().item<int32_t>() >= 0 && gauss_ids.max().item<int32_t>() < n,
                    "gauss_ids out of range");
    return {gauss_ids, offsets};
}

std::vector<torch::Tensor> bin(const torch::Tensor& means2d, const torch::Tensor& radii, const torch::Tensor& depths,
                               int64_t width, int64_t height, int64_t tile, int64_t num_threads) {
    const Grid grid = checked_grid(width, height, tile);
    check_cpu_contiguous(means2d, "means2d");
    TORCH_CHECK(means2d.scalar_type() == torch::kFloat32 || means2d.scalar_type() == torch::kFloat64,
                "means2d must be float32 or float64");
    TORCH_CHECK(means2d.dim() == 2 && means2d.size(1) == 2, "means2d must be [N, 2] (got ", means2d.sizes(), ")");
    const int64_t n = means2d.size(0);
    check_cpu_contiguous(radii, "radii");
    check_cpu_contiguous(depths, "depths");
    TORCH_CHECK(radii.scalar_type() == torch::kInt32, "radii must be int32 (got ", radii.scalar_type(), ")");
    TORCH_CHECK(depths.is_floating_point(), "depths must be floating point (got ", depths.scalar_type(), ")");
    check_shape(radii, "radii", {n});
    check_shape(depths, "depths", {n});
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    const Bins b = bin_gaussians(means2d, radii, depths, grid, static_cast<int>(num_threads));
    return {b.gauss_ids, b.offsets};
}

std::vector<torch::Tensor> forward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                   const torch::Tensor& opacities, const torch::Tensor& colors,
                                   const torch::Tensor& depths, const torch::Tensor& radii, int64_t width,
                                   int64_t height, int64_t tile, double alpha_max, double alpha_min, double t_min,
                                   int64_t num_threads) {
    check_gaussians(means2d, conics, opacities, colors);
    std::vector<torch::Tensor> b = bin(means2d, radii, depths, width, height, tile, num_threads);
    const Grid grid(width, height, tile);
    std::vector<torch::Tensor> out = composite_forward(means2d, conics, opacities, colors, {b[0], b[1]}, grid,
                                                       alpha_max, alpha_min, t_min, static_cast<int>(num_threads));
    out.push_back(b[0]);
    out.push_back(b[1]);
    return out;  // image, alpha, final_t, n_contrib, gauss_ids, offsets
}

std::vector<torch::Tensor> backward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                    const torch::Tensor& opacities, const torch::Tensor& colors,
                                    const torch::Tensor& gauss_ids, const torch::Tensor& offsets,
                                    const torch::Tensor& final_t, const torch::Tensor& n_contrib,
                                    const torch::Tensor& grad_image, const torch::Tensor& grad_alpha, int64_t width,
                                    int64_t height, int64_t tile, double alpha_max, double alpha_min, double t_min,
                                    int64_t num_threads) {
    const int64_t n = check_gaussians(means2d, conics, opacities, colors);
    const Grid grid = checked_grid(width, height, tile);
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    const Bins bins = checked_bins(gauss_ids, offsets, grid, n);
    const auto dtype = colors.scalar_type();
    check_float(grad_image, "grad_image", dtype);
    check_float(grad_alpha, "grad_alpha", dtype);
    check_shape(grad_image, "grad_image", {colors.size(1), height, width});
    check_shape(grad_alpha, "grad_alpha", {1, height, width});
    check_float(final_t, "final_t", torch::kFloat64);
    check_shape(final_t, "final_t", {height, width});
    check_cpu_contiguous(n_contrib, "n_contrib");
    TORCH_CHECK(n_contrib.scalar_type() == torch::kInt32, "n_contrib must be int32");
    check_shape(n_contrib, "n_contrib", {height, width});
    return composite_backward(means2d, conics, opacities, colors, bins, final_t, n_contrib, grad_image, grad_alpha,
                              grid, alpha_max, alpha_min, t_min, static_cast<int>(num_threads));
}

}  // namespace
}  // namespace cpu_rasterizer

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "Tile-based Gaussian splat compositing on the CPU (C++17 / OpenMP)";
    m.def("bin", &cpu_rasterizer::bin, "Per-tile front-to-back Gaussian lists: (gauss_ids int32, offsets int64)");
    m.def("forward", &cpu_rasterizer::forward,
          "Composite: (image, alpha, final_t, n_contrib, gauss_ids, offsets)");
    m.def("backward", &cpu_rasterizer::backward,
          "Gradients: (d_means2d, d_conics, d_opacities, d_colors)");
}
