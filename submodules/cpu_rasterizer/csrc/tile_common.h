// Helpers shared by the forward and backward tile loops.
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "tile_math.h"

namespace cpu_rasterizer {

// One tile's pixel block and its front-to-back Gaussian list.
struct TileView {
    int64_t x0, y0;        // first pixel (image coordinates)
    int64_t rows, cols;    // pixels inside the image
    const int32_t* ids;    // Gaussian indices, front to back
    int64_t count;         // list length
};

inline TileView tile_view(const Grid& grid, const Bins& bins, int64_t tile_id) {
    const int64_t tx = tile_id % grid.tiles_x, ty = tile_id / grid.tiles_x;
    const int64_t x0 = tx * grid.tile, y0 = ty * grid.tile;
    const int64_t* off = bins.offsets.data_ptr<int64_t>();
    return {x0,
            y0,
            std::min(grid.tile, grid.height - y0),
            std::min(grid.tile, grid.width - x0),
            bins.gauss_ids.data_ptr<int32_t>() + off[tile_id],
            off[tile_id + 1] - off[tile_id]};
}

// Everything the tile loops read.
template <typename scalar_t>
struct RasterInputs {
    std::vector<PackedGaussian<scalar_t>> packed;  // [N]
    const scalar_t* colors;                        // [N, C]
    int64_t channels;
    Grid grid;
    Thresholds<scalar_t> th;
};

template <typename scalar_t>
RasterInputs<scalar_t> make_inputs(const torch::Tensor& means2d, const torch::Tensor& conics,
                                   const torch::Tensor& opacities, const torch::Tensor& colors, const Grid& grid,
                                   double alpha_max, double alpha_min, double t_min, int num_threads) {
    const int64_t n = means2d.size(0);
    RasterInputs<scalar_t> in{std::vector<PackedGaussian<scalar_t>>(static_cast<size_t>(n)),
                              colors.data_ptr<scalar_t>(),
                              colors.size(1),
                              grid,
                              {static_cast<scalar_t>(alpha_max), static_cast<scalar_t>(alpha_min),
                               static_cast<scalar_t>(t_min)}};
    const scalar_t* m = means2d.data_ptr<scalar_t>();
    const scalar_t* con = conics.data_ptr<scalar_t>();
    const scalar_t* op = opacities.data_ptr<scalar_t>();
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) in.packed[i] = pack_gaussian<scalar_t>(m + 2 * i, con + 3 * i, op[i], in.th.alpha_min);
    return in;
}

// Tiles with work, longest list first (better balance under dynamic scheduling).
inline std::vector<int64_t> busy_tiles(const Bins& bins) {
    const int64_t n_tiles = bins.offsets.numel() - 1;
    const int64_t* off = bins.offsets.data_ptr<int64_t>();
    std::vector<int64_t> order;
    order.reserve(static_cast<size_t>(n_tiles));
    for (int64_t t = 0; t < n_tiles; ++t)
        if (off[t + 1] > off[t]) order.push_back(t);
    std::stable_sort(order.begin(), order.end(),
                     [off](int64_t a, int64_t b) { return off[a + 1] - off[a] > off[b + 1] - off[b]; });
    return order;
}

}  // namespace cpu_rasterizer
