// Python bindings with input validation (every check names the offending argument).
// With ssim_binding.cpp and geometry_binding.cpp, the only translation units that include torch.
#include <torch/extension.h>

#include "binding_checks.h"
#include "geometry_binding.h"
#include "image_ops_binding.h"
#include "projection.h"
#include "rasterizer.h"
#include "ssim_binding.h"

namespace cpu_rasterizer {
namespace {

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
    check_floating(colors, "colors");
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
    const Thresholds<scalar_t> th{static_cast<scalar_t>(alpha_max), static_cast<scalar_t>(alpha_min),
                                  static_cast<scalar_t>(t_min)};
    // alpha_min > 0 in the working precision: the tile kernels tell a skipped lane by its alpha of 0
    TORCH_CHECK(th.alpha_min > 0 && th.alpha_min <= th.alpha_max && th.alpha_max <= 1,
                "thresholds must satisfy 0 < alpha_min <= alpha_max <= 1 (got alpha_min=", alpha_min,
                ", alpha_max=", alpha_max, ")");
    TORCH_CHECK(th.t_min >= 0 && th.t_min < 1, "t_min must be in [0, 1) (got ", t_min, ")");
    return th;
}

// Depths as float64 sort keys (float32 -> double is exact: same order and ties).
std::vector<double> depth_keys(const torch::Tensor& depths, int64_t n) {
    check_floating(depths, "depths");
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
    check_floating(means2d, "means2d");
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

// ---- projection and SH colour (projection.h); py_ names: the kernels' own names are templates

// The projection's constants, in the order of cpu_projection.PROJECTION_CONSTANTS.
ProjectionSettings projection_settings(const std::vector<double>& constants, int64_t width, int64_t height,
                                       bool antialiased) {
    TORCH_CHECK(constants.size() == 8, "constants must hold 8 values (got ", constants.size(), ")");
    TORCH_CHECK(width > 0 && height > 0, "image size must be positive (got ", width, "x", height, ")");
    return {constants[0], constants[1], constants[2], constants[3], constants[4], constants[5],
            constants[6], constants[7], width,        height,       antialiased};
}

// Checks means3d [N, 3], scales [N, 3], quats [N, 4] of one floating dtype; returns N.
int64_t check_geometry3d(const torch::Tensor& means3d, const torch::Tensor& scales, const torch::Tensor& quats) {
    check_floating(means3d, "means3d");
    TORCH_CHECK(means3d.dim() == 2, "means3d must be [N, 3] (got ", means3d.sizes(), ")");
    const int64_t n = means3d.size(0);
    check_shape(means3d, "means3d", {n, 3});
    check_float(scales, "scales", means3d.scalar_type());
    check_shape(scales, "scales", {n, 3});
    check_float(quats, "quats", means3d.scalar_type());
    check_shape(quats, "quats", {n, 4});
    return n;
}

template <typename scalar_t>
ProjectionCamera<scalar_t> camera(const torch::Tensor& viewmat, const torch::Tensor& K) {
    ProjectionCamera<scalar_t> cam;
    std::copy_n(viewmat.data_ptr<scalar_t>(), 16, cam.viewmat);
    std::copy_n(K.data_ptr<scalar_t>(), 9, cam.K);
    return cam;
}

void check_camera(const torch::Tensor& viewmat, const torch::Tensor& K, torch::ScalarType dtype) {
    check_float(viewmat, "viewmat", dtype);
    check_shape(viewmat, "viewmat", {4, 4});
    check_float(K, "K", dtype);
    check_shape(K, "K", {3, 3});
}

std::vector<torch::Tensor> py_project_forward(const torch::Tensor& means3d, const torch::Tensor& scales,
                                           const torch::Tensor& quats, const torch::Tensor& viewmat,
                                           const torch::Tensor& K, int64_t width, int64_t height, bool antialiased,
                                           const std::vector<double>& constants, int64_t num_threads) {
    const int64_t n = check_geometry3d(means3d, scales, quats);
    check_camera(viewmat, K, means3d.scalar_type());
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    const ProjectionSettings st = projection_settings(constants, width, height, antialiased);
    const auto opts = means3d.options();
    torch::Tensor means2d = torch::empty({n, 2}, opts), conics = torch::empty({n, 3}, opts);
    torch::Tensor depths = torch::empty({n}, opts), radii = torch::empty({n}, opts.dtype(torch::kInt32));
    torch::Tensor compensation = torch::empty({antialiased ? n : 0}, opts);
    AT_DISPATCH_FLOATING_TYPES(means3d.scalar_type(), "cpu_rasterizer_project_forward", [&] {
        const GeometryArrays<scalar_t> gs{means3d.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                                          quats.data_ptr<scalar_t>(), n};
        const ProjectionOutputs<scalar_t> out{means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                              depths.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(),
                                              antialiased ? compensation.data_ptr<scalar_t>() : nullptr};
        cpu_rasterizer::project_forward<scalar_t>(gs, camera<scalar_t>(viewmat, K), st, out,
                                                  static_cast<int>(num_threads));
    });
    return {means2d, conics, depths, radii, compensation};
}

std::vector<torch::Tensor> py_project_backward(const torch::Tensor& means3d, const torch::Tensor& scales,
                                            const torch::Tensor& quats, const torch::Tensor& viewmat,
                                            const torch::Tensor& K, int64_t width, int64_t height, bool antialiased,
                                            const std::vector<double>& constants, const torch::Tensor& grad_means2d,
                                            const torch::Tensor& grad_conics, const torch::Tensor& grad_depths,
                                            const torch::Tensor& grad_compensation, int64_t num_threads) {
    const int64_t n = check_geometry3d(means3d, scales, quats);
    const auto dtype = means3d.scalar_type();
    check_camera(viewmat, K, dtype);
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    const ProjectionSettings st = projection_settings(constants, width, height, antialiased);
    check_float(grad_means2d, "grad_means2d", dtype);
    check_shape(grad_means2d, "grad_means2d", {n, 2});
    check_float(grad_conics, "grad_conics", dtype);
    check_shape(grad_conics, "grad_conics", {n, 3});
    check_float(grad_depths, "grad_depths", dtype);
    check_shape(grad_depths, "grad_depths", {n});
    check_float(grad_compensation, "grad_compensation", dtype);
    check_shape(grad_compensation, "grad_compensation", {antialiased ? n : 0});
    torch::Tensor d_means = torch::empty_like(means3d);  // every entry is written by project_backward
    torch::Tensor d_scales = torch::empty_like(scales), d_quats = torch::empty_like(quats);
    AT_DISPATCH_FLOATING_TYPES(dtype, "cpu_rasterizer_project_backward", [&] {
        const GeometryArrays<scalar_t> gs{means3d.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                                          quats.data_ptr<scalar_t>(), n};
        const ProjectionGradIn<scalar_t> gin{grad_means2d.data_ptr<scalar_t>(), grad_conics.data_ptr<scalar_t>(),
                                             grad_depths.data_ptr<scalar_t>(),
                                             antialiased ? grad_compensation.data_ptr<scalar_t>() : nullptr};
        const GeometryGrads<scalar_t> out{d_means.data_ptr<scalar_t>(), d_scales.data_ptr<scalar_t>(),
                                          d_quats.data_ptr<scalar_t>()};
        cpu_rasterizer::project_backward<scalar_t>(gs, camera<scalar_t>(viewmat, K), st, gin, out,
                                                   static_cast<int>(num_threads));
    });
    return {d_means, d_scales, d_quats};
}

ShSettings sh_settings(int64_t degree, const std::vector<double>& constants, double norm_eps) {
    TORCH_CHECK(degree >= 0 && degree <= kShMaxDegree, "degree must be in [0, ", kShMaxDegree, "] (got ", degree, ")");
    TORCH_CHECK(constants.size() == kShConstants, "constants must hold ", kShConstants, " values (got ",
                constants.size(), ")");
    ShSettings st{static_cast<int>(degree), {}, norm_eps};
    std::copy(constants.begin(), constants.end(), st.constants);
    return st;
}

// Checks sh [N, K, 3] (K >= (degree + 1)^2) and dirs [N, 3] of one floating dtype.
void check_sh(const torch::Tensor& sh, const torch::Tensor& dirs, int64_t degree) {
    check_floating(sh, "sh");
    TORCH_CHECK(sh.dim() == 3 && sh.size(2) == 3 && sh.size(1) >= (degree + 1) * (degree + 1),
                "sh must be [N, K, 3] with K >= (degree + 1)^2 = ", (degree + 1) * (degree + 1), " (got ", sh.sizes(),
                ")");
    check_float(dirs, "dirs", sh.scalar_type());
    check_shape(dirs, "dirs", {sh.size(0), 3});
}

template <typename scalar_t>
ShArrays<scalar_t> sh_arrays(const torch::Tensor& sh, const torch::Tensor& dirs) {
    return {sh.data_ptr<scalar_t>(), dirs.data_ptr<scalar_t>(), sh.size(0), sh.size(1)};
}

torch::Tensor py_sh_forward(const torch::Tensor& sh, const torch::Tensor& dirs, int64_t degree,
                         const std::vector<double>& constants, double norm_eps, int64_t num_threads) {
    const ShSettings st = sh_settings(degree, constants, norm_eps);
    check_sh(sh, dirs, degree);
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    torch::Tensor colors = torch::empty({sh.size(0), 3}, sh.options());
    AT_DISPATCH_FLOATING_TYPES(sh.scalar_type(), "cpu_rasterizer_sh_forward", [&] {
        cpu_rasterizer::sh_forward<scalar_t>(sh_arrays<scalar_t>(sh, dirs), st, colors.data_ptr<scalar_t>(),
                                             static_cast<int>(num_threads));
    });
    return colors;
}

torch::Tensor py_sh_backward(const torch::Tensor& sh, const torch::Tensor& dirs, int64_t degree,
                          const std::vector<double>& constants, double norm_eps, const torch::Tensor& grad_colors,
                          int64_t num_threads) {
    const ShSettings st = sh_settings(degree, constants, norm_eps);
    check_sh(sh, dirs, degree);
    TORCH_CHECK(num_threads > 0, "num_threads must be positive");
    check_float(grad_colors, "grad_colors", sh.scalar_type());
    check_shape(grad_colors, "grad_colors", {sh.size(0), 3});
    torch::Tensor d_sh = torch::empty_like(sh);  // every entry is written by sh_backward
    AT_DISPATCH_FLOATING_TYPES(sh.scalar_type(), "cpu_rasterizer_sh_backward", [&] {
        cpu_rasterizer::sh_backward<scalar_t>(sh_arrays<scalar_t>(sh, dirs), st, grad_colors.data_ptr<scalar_t>(),
                                              d_sh.data_ptr<scalar_t>(), static_cast<int>(num_threads));
    });
    return d_sh;
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
    m.def("project_forward", &cpu_rasterizer::py_project_forward,
          "project_forward(means3d, scales, quats, viewmat, K, width, height, antialiased, constants, num_threads): "
          "(means2d, conics, depths, radii int32, compensation ([N], or [0] unless antialiased))");
    m.def("project_backward", &cpu_rasterizer::py_project_backward,
          "project_backward(means3d, scales, quats, viewmat, K, width, height, antialiased, constants, grad_means2d, "
          "grad_conics, grad_depths, grad_compensation, num_threads): (d_means3d, d_scales, d_quats)");
    m.def("sh_forward", &cpu_rasterizer::py_sh_forward,
          "sh_forward(sh, dirs, degree, constants, norm_eps, num_threads): colors [N, 3]");
    m.def("sh_backward", &cpu_rasterizer::py_sh_backward,
          "sh_backward(sh, dirs, degree, constants, norm_eps, grad_colors, num_threads): d_sh [N, K, 3]");
    m.def("geometry_forward", &cpu_rasterizer::py_geometry_forward,
          "geometry_forward(xyz, log_scales, quats, weights or None, phi or None, norm_eps, num_threads): (means, "
          "scales, unit quats) at the time whose bump activations are phi (scene/deformation.gaussian_geometry)");
    m.def("geometry_backward", &cpu_rasterizer::py_geometry_backward,
          "geometry_backward(log_scales, quats, weights or None, phi or None, norm_eps, grad_means, grad_scales, "
          "grad_quats, num_threads): (d_xyz, d_log_scales, d_quats, d_weights or [0])");
    m.def("l1_dssim", &cpu_rasterizer::py_l1_dssim,
          "l1_dssim(pred, gt, mask or None, lambda, taps, c1, c2, need_grad, num_threads, isa): (loss [], "
          "d loss / d pred [C, H, W] or [0]); the training colour loss (1 - lambda) L1 + lambda (1 - SSIM)");
    m.def("finish_forward", &cpu_rasterizer::py_finish_forward,
          "finish_forward(out, alpha, bg, depth_channel, alpha_floor, num_threads): (image [3, H, W] on the "
          "background, depth [1, H, W] normalised by alpha) (backends/common.finish_outputs)");
    m.def("finish_backward", &cpu_rasterizer::py_finish_backward,
          "finish_backward(out, alpha, bg, depth_channel, alpha_floor, grad_image or None, grad_depth or None, "
          "num_threads): (grad_out [C, H, W] with rows 0-2 and depth_channel written, grad_alpha [1, H, W])");
    m.def("depth_l1", &cpu_rasterizer::py_depth_l1,
          "depth_l1(pred, gt, mask or None, scale_floor, need_grad, num_threads): (loss [], d loss / d pred "
          "[1, H, W] or [0]); L1 on depth over gt > 0, divided by the mean valid gt (loss_utils.depth_l1_torch)");
}
