// Python bindings with input validation (every check names the offending argument).
// The only translation unit that includes torch.
#include <torch/extension.h>

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

// Means, conics and opacities of n Gaussians in `dtype`.
void check_geometry(const torch::Tensor& means2d, const torch::Tensor& conics, const torch::Tensor& opacities,
                    torch::ScalarType dtype, int64_t n) {
    check_float(means2d, "means2d", dtype);
    check_float(conics, "conics", dtype);
    check_float(opacities, "opacities", dtype);
    check_shape(means2d, "means2d", {n, 2});
    check_shape(conics, "conics", {n, 3});
    check_shape(opacities, "opacities", {n});
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
    check_geometry(means2d, conics, opacities, colors.scalar_type(), n);
    return n;
}

BinsView checked_bins(const torch::Tensor& gauss_ids, const torch::Tensor& offsets, const Grid& grid, int64_t n) {
    check_cpu_contiguous(gauss_ids, "gauss_ids");
    check_cpu_contiguous(offsets, "offsets");
    TORCH_CHECK(gauss_ids.scalar_type() == torch::kInt32 && gauss_ids.dim() == 1, "gauss_ids must be 1-D int32");
    TORCH_CHECK(offsets.scalar_type() == torch::kInt64, "offsets must be int64");
    check_shape(offsets, "offsets", {grid.n_tiles() + 1});
    const int64_t* off = offsets.data_ptr<int64_t>();
    TORCH_CHECK(off[0] == 0 && off[grid.n_tiles()] == gauss_ids.numel(), "offsets do not match gauss_ids");
    for (int64_t t = 0; t < grid.n_tiles(); ++t) TORCH_CHECK(off[t] <= off[t + 1], "offsets must be non-decreasing");
    const int32_t* ids = gauss_ids.data_ptr<int32_t>();
    for (int64_t i = 0; i < gauss_ids.numel(); ++i) TORCH_CHECK(ids[i] >= 0 && ids[i] < n, "gauss_ids out of range");
    return {ids, off};
}

template <typename scalar_t>
GaussianArrays<scalar_t> arrays(const torch::Tensor& means2d, const torch::Tensor& conics,
                                const torch::Tensor& opacities, const torch::Tensor& colors) {
    return {means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(),
            colors.data_ptr<scalar_t>(),  colors.size(0),                colors.size(1)};
}

template <typename scalar_t>
Thresholds<scalar_t> thresholds(double alpha_max, double alpha_min, double t_min) {
    return {static_cast<scalar_t>(alpha_max), static_cast<scalar_t>(alpha_min), static_cast<scalar_t>(t_min)};
}

// Depths as float64 sort keys (float32 -> double is exact: same order and ties).
std::vector<double> depth_keys(const torch::Tensor& depths, int64_t n) {
    check_cpu_contiguous(depths, "depths");
    TORCH_CHECK(depths.scalar_type() == torch::kFloat32 || depths.scalar_type() == torch::kFloat64,
                "depths must be float32 or float64 (got ", depths.scalar_type(), ")");
    check_shape(depths, "depths", {n});
    std::vector<double> keys(static_cast<size_t>(n));
    AT_DISPATCH_FLOATING_TYPES(depths.scalar_type(), "cpu_rasterizer_depths", [&] {
        std::copy_n(depths.data_ptr<scalar_t>(), n, keys.begin());
    });
    return keys;
}

void check_radii(const torch::Tensor& radii, int64_t n) {
    check_cpu_contiguous(radii, "radii");
    TORCH_CHECK(radii.scalar_type() == torch::kInt32, "radii must be int32 (got ", radii.scalar_type(), ")");
    check_shape(radii, "radii", {n});
}

// Bin outputs as tensors: offsets [T + 1] now, gauss_ids once binning knows its length.
struct BinTensors {
    torch::Tensor ids, offsets;
    explicit BinTensors(const Grid& grid) : offsets(torch::empty({grid.n_tiles() + 1}, torch::dtype(torch::kInt64))) {}
    BinsOut out() {
        return {offsets.data_ptr<int64_t>(), [this](int64_t pairs) {
                    ids = torch::empty({pairs}, torch::dtype(torch::kInt32));
                    return ids.data_ptr<int32_t>();
                }};
    }
};

std::vector<torch::Tensor> bin(const torch::Tensor& means2d, const torch::Tensor& conics,
                               const torch::Tensor& opacities, const torch::Tensor& radii,
                               const torch::Tensor& depths, int64_t width, int64_t height, int64_t tile,
                               double alpha_min) {
    const Grid grid = checked_grid(width, height, tile);
    check_cpu_contiguous(means2d, "means2d");
    TORCH_CHECK(means2d.scalar_type() == torch::kFloat32 || means2d.scalar_type() == torch::kFloat64,
                "means2d must be float32 or float64 (got ", means2d.scalar_type(), ")");
    TORCH_CHECK(means2d.dim() == 2, "means2d must be [N, 2] (got ", means2d.sizes(), ")");
    const int64_t n = means2d.size(0);
    check_geometry(means2d, conics, opacities, means2d.scalar_type(), n);
    check_radii(radii, n);
    const std::vector<double> keys = depth_keys(depths, n);
    BinTensors b(grid);
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "cpu_rasterizer_bin", [&] {
        const GaussianArrays<scalar_t> gs{means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                          opacities.data_ptr<scalar_t>(), nullptr, n, 0};
        bin_gaussians<scalar_t>(gs, radii.data_ptr<int32_t>(), keys.data(), grid, static_cast<scalar_t>(alpha_min),
                                b.out());
    });
    return {b.ids, b.offsets};
}

Isa checked_isa(int64_t isa) {
    TORCH_CHECK(isa >= 0 && isa <= 2, "isa must be 0 (auto), 1 (generic) or 2 (avx2), got ", isa);
    TORCH_CHECK(isa != 2 || avx2_supported(), "isa=2 (avx2) requested but this CPU has no AVX2");
    return static_cast<Isa>(isa);
}

std::vector<torch::Tensor> forward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                   const torch::Tensor& opacities, const torch::Tensor& colors,
                                   const torch::Tensor& depths, const torch::Tensor& radii, int64_t width,
                                   int64_t height, int64_t tile, double alpha_max, double alpha_min, double t_min,
                                   int64_t num_threads, int64_t isa) {
    const Isa kernel_isa = checked_isa(isa);
    const int64_t n = check_gaussians(means2d, conics, opacities, colors);
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    const Grid grid = checked_grid(width, height, tile);
    check_radii(radii, n);
    const std::vector<double> keys = depth_keys(depths, n);
    BinTensors b(grid);
    const auto opts = colors.options();
    // every pixel is written by composite_forward (empty tiles included)
    torch::Tensor image = torch::empty({colors.size(1), height, width}, opts);
    torch::Tensor alpha = torch::empty({1, height, width}, opts);
    torch::Tensor final_t = torch::empty({height, width}, opts.dtype(torch::kFloat64));
    torch::Tensor n_contrib = torch::empty({height, width}, opts.dtype(torch::kInt32));
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "cpu_rasterizer_forward", [&] {
        const ForwardOutputs<scalar_t> out{image.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(),
                                           final_t.data_ptr<double>(), n_contrib.data_ptr<int32_t>()};
        composite_forward<scalar_t>(arrays<scalar_t>(means2d, conics, opacities, colors), radii.data_ptr<int32_t>(),
                                    keys.data(), grid, thresholds<scalar_t>(alpha_max, alpha_min, t_min), out,
                                    b.out(), kernel_isa, static_cast<int>(num_threads));
    });
    return {image, alpha, final_t, n_contrib, b.ids, b.offsets};
}

std::vector<torch::Tensor> backward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                    const torch::Tensor& opacities, const torch::Tensor& colors,
                                    const torch::Tensor& gauss_ids, const torch::Tensor& offsets,
                                    const torch::Tensor& final_t, const torch::Tensor& n_contrib,
                                    const torch::Tensor& grad_image, const torch::Tensor& grad_alpha, int64_t width,
                                    int64_t height, int64_t tile, double alpha_max, double alpha_min, double t_min,
                                    int64_t num_threads, int64_t isa) {
    const Isa kernel_isa = checked_isa(isa);
    const int64_t n = check_gaussians(means2d, conics, opacities, colors);
    const Grid grid = checked_grid(width, height, tile);
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    const BinsView bins = checked_bins(gauss_ids, offsets, grid, n);
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
    torch::Tensor d_means = torch::empty_like(means2d);  // every entry is written by composite_backward
    torch::Tensor d_conics = torch::empty_like(conics);
    torch::Tensor d_opac = torch::empty_like(opacities);
    torch::Tensor d_colors = torch::empty_like(colors);
    AT_DISPATCH_FLOATING_TYPES(dtype, "cpu_rasterizer_backward", [&] {
        const BackwardInputs<scalar_t> bi{grad_image.data_ptr<scalar_t>(), grad_alpha.data_ptr<scalar_t>(),
                                          final_t.data_ptr<double>(), n_contrib.data_ptr<int32_t>()};
        const Gradients<scalar_t> out{d_means.data_ptr<scalar_t>(), d_conics.data_ptr<scalar_t>(),
                                      d_opac.data_ptr<scalar_t>(), d_colors.data_ptr<scalar_t>()};
        composite_backward<scalar_t>(arrays<scalar_t>(means2d, conics, opacities, colors), bins, grid,
                                     thresholds<scalar_t>(alpha_max, alpha_min, t_min), bi, out, kernel_isa,
                                     static_cast<int>(num_threads));
    });
    return {d_means, d_conics, d_opac, d_colors};
}

}  // namespace
}  // namespace cpu_rasterizer

#ifndef CPU_RASTERIZER_SOURCES
#define CPU_RASTERIZER_SOURCES xunknown
#endif
#define CPU_RASTERIZER_STR2(x) #x
#define CPU_RASTERIZER_STR(x) CPU_RASTERIZER_STR2(x)

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "Tile-based Gaussian splat compositing on the CPU (C++17 / OpenMP)";
    // "x" + build_config.sources_fingerprint() of the sources this module was compiled from
    m.attr("sources_fingerprint") = CPU_RASTERIZER_STR(CPU_RASTERIZER_SOURCES);
    m.def("has_avx2", &cpu_rasterizer::avx2_supported, "Whether the AVX2 kernels can run on this CPU");
    m.def("bin", &cpu_rasterizer::bin,
          "bin(means2d, conics, opacities, radii, depths, width, height, tile, alpha_min): per-tile "
          "front-to-back Gaussian lists (gauss_ids int32, offsets int64)");
    m.def("forward", &cpu_rasterizer::forward,
          "Composite: (image, alpha, final_t, n_contrib, gauss_ids, offsets)");
    m.def("backward", &cpu_rasterizer::backward,
          "Gradients: (d_means2d, d_conics, d_opacities, d_colors)");
}
