// Forward compositing: one OpenMP task per tile, Gaussians front to back,
// pixels of a row span evaluated together.
#include <omp.h>

#include "tile_common.h"

namespace cpu_rasterizer {
namespace {

// Raw pointers into the forward outputs.
template <typename scalar_t>
struct ForwardOutputs {
    scalar_t* image;     // [C, H, W]
    scalar_t* alpha;     // [H, W]
    double* final_t;     // [H, W]
    int32_t* n_contrib;  // [H, W]
};

// Per-thread working memory of one tile (reused across tiles).
template <typename scalar_t>
struct ForwardScratch {
    std::vector<double> trans;       // [P] transmittance (double, like torch's cumprod)
    std::vector<int32_t> last;       // [P] 1 + list position of the last contributor
    std::vector<uint8_t> done;       // [P] pixel terminated
    std::vector<scalar_t> acc;       // [C, P] colour sums
    std::vector<scalar_t> acc_alpha; // [P] sum of weights
    std::vector<int64_t> row_alive;  // [tile] live pixels per row
    std::vector<scalar_t> alpha;     // [tile] alphas of one row span
    std::vector<scalar_t> weight;    // [tile] weights of one row span

    ForwardScratch(int64_t tile, int64_t channels)
        : trans(tile * tile), last(tile * tile), done(tile * tile), acc(channels * tile * tile),
          acc_alpha(tile * tile), row_alive(tile), alpha(tile), weight(tile) {}

    void reset(const TileView& v) {
        std::fill(trans.begin(), trans.end(), 1.0);
        std::fill(last.begin(), last.end(), 0);
        std::fill(done.begin(), done.end(), uint8_t(0));
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        std::fill(acc_alpha.begin(), acc_alpha.end(), scalar_t(0));
        std::fill(row_alive.begin(), row_alive.end(), 0);
        std::fill(row_alive.begin(), row_alive.begin() + v.rows, v.cols);
    }
};

// Composite one row span of Gaussian g (list position k); returns the number of pixels that terminated.
template <typename scalar_t>
int64_t composite_span(ForwardScratch<scalar_t>& s, const Thresholds<scalar_t>& th, int64_t k, int64_t p0,
                       int64_t n, const scalar_t* __restrict__ color, int64_t channels, int64_t plane) {
    bool any = false;
    int64_t finished = 0;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t p = p0 + i;
        const scalar_t al = s.alpha[i];
        s.weight[i] = scalar_t(0);
        if (al == scalar_t(0) || s.done[p]) continue;
        const double t_before = s.trans[p];
        const double t_after = t_before * static_cast<double>(scalar_t(1) - al);
        if (!(static_cast<scalar_t>(t_after) >= th.t_min)) {  // would push T below t_min: stop here
            s.done[p] = 1;
            ++finished;
            continue;
        }
        const scalar_t w = al * static_cast<scalar_t>(t_before);
        s.weight[i] = w;
        s.trans[p] = t_after;
        s.last[p] = static_cast<int32_t>(k + 1);
        s.acc_alpha[p] += w;
        any = true;
    }
    if (any) {
        for (int64_t ch = 0; ch < channels; ++ch) {
            scalar_t* __restrict__ dst = s.acc.data() + ch * plane + p0;
            const scalar_t cc = color[ch];
            for (int64_t i = 0; i < n; ++i) dst[i] += s.weight[i] * cc;
        }
    }
    return finished;
}

template <typename scalar_t>
void write_tile(const TileView& v, const ForwardScratch<scalar_t>& s, const ForwardOutputs<scalar_t>& out,
                const Grid& grid, int64_t channels) {
    const int64_t plane = grid.tile * grid.tile, hw = grid.width * grid.height;
    for (int64_t r = 0; r < v.rows; ++r) {
        const int64_t src = r * grid.tile, dst = (v.y0 + r) * grid.width + v.x0;
        for (int64_t ch = 0; ch < channels; ++ch)
            std::copy_n(s.acc.data() + ch * plane + src, v.cols, out.image + ch * hw + dst);
        std::copy_n(s.acc_alpha.data() + src, v.cols, out.alpha + dst);
        std::copy_n(s.trans.data() + src, v.cols, out.final_t + dst);
        std::copy_n(s.last.data() + src, v.cols, out.n_contrib + dst);
    }
}

template <typename scalar_t>
void forward_tile(const TileView& v, const RasterInputs<scalar_t>& in, ForwardScratch<scalar_t>& s,
                  const ForwardOutputs<scalar_t>& out) {
    s.reset(v);
    const int64_t tile = in.grid.tile, plane = tile * tile, channels = in.channels;
    int64_t alive = v.rows * v.cols;
    for (int64_t k = 0; k < v.count && alive > 0; ++k) {
        const int32_t gid = v.ids[k];
        const PackedGaussian<scalar_t>& g = in.packed[gid];
        int64_t r0, r1;
        if (g.never || !support_rows(g, v.y0, v.rows, r0, r1)) continue;
        const scalar_t* color = in.colors + static_cast<int64_t>(gid) * channels;
        for (int64_t r = r0; r <= r1; ++r) {
            if (s.row_alive[r] == 0) continue;
            const double py = static_cast<double>(v.y0 + r) + 0.5;
            int64_t c0, c1;
            if (!support_cols(g, py, v.x0, v.cols, c0, c1)) continue;
            const int64_t n = c1 - c0 + 1;
            alpha_row(g, static_cast<scalar_t>(v.x0 + c0), static_cast<scalar_t>(py), n, in.th, s.alpha.data());
            const int64_t finished = composite_span(s, in.th, k, r * tile + c0, n, color, channels, plane);
            s.row_alive[r] -= finished;
            alive -= finished;
        }
    }
    write_tile(v, s, out, in.grid, channels);
}

template <typename scalar_t>
void forward_all(const RasterInputs<scalar_t>& in, const Bins& bins, const ForwardOutputs<scalar_t>& out,
                 int num_threads) {
    const std::vector<int64_t> tiles = busy_tiles(bins);
    const int64_t n_busy = static_cast<int64_t>(tiles.size());
#pragma omp parallel num_threads(num_threads)
    {
        ForwardScratch<scalar_t> scratch(in.grid.tile, in.channels);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_busy; ++i) forward_tile(tile_view(in.grid, bins, tiles[i]), in, scratch, out);
    }
}

}  // namespace

std::vector<torch::Tensor> composite_forward(const torch::Tensor& means2d, const torch::Tensor& conics,
                                             const torch::Tensor& opacities, const torch::Tensor& colors,
                                             const Bins& bins, const Grid& grid, double alpha_max,
                                             double alpha_min, double t_min, int num_threads) {
    const auto opts = colors.options();
    const int64_t channels = colors.size(1);
    torch::Tensor image = torch::zeros({channels, grid.height, grid.width}, opts);
    torch::Tensor alpha = torch::zeros({1, grid.height, grid.width}, opts);
    torch::Tensor final_t = torch::ones({grid.height, grid.width}, opts.dtype(torch::kFloat64));
    torch::Tensor n_contrib = torch::zeros({grid.height, grid.width}, opts.dtype(torch::kInt32));
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "cpu_rasterizer_forward", [&] {
        const RasterInputs<scalar_t> in = make_inputs<scalar_t>(means2d, conics, opacities, colors, grid, alpha_max,
                                                                alpha_min, t_min, num_threads);
        const ForwardOutputs<scalar_t> out{image.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(),
                                           final_t.data_ptr<double>(), n_contrib.data_ptr<int32_t>()};
        forward_all(in, bins, out, num_threads);
    });
    return {image, alpha, final_t, n_contrib};
}

}  // namespace cpu_rasterizer
