// Tile binning: which tiles each Gaussian touches and the per-tile depth order.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "rasterizer.h"

namespace cpu_rasterizer {
namespace {

struct TileRange {
    int64_t x0, y0, x1, y1;  // inclusive; empty when x1 < x0 or y1 < y0
    int64_t count() const { return (x1 < x0 || y1 < y0) ? 0 : (x1 - x0 + 1) * (y1 - y0 + 1); }
};

// floor(v), clamped to [0, hi] in floating point, then truncated to an integer,
// exactly like torch.floor(v).clamp(0, hi).long().
template <typename scalar_t>
int64_t floor_clamp(scalar_t v, int64_t hi) {
    scalar_t f = std::floor(v);
    f = std::max(f, scalar_t(0));
    f = std::min(f, static_cast<scalar_t>(hi));
    return static_cast<int64_t>(f);
}

// Same float operations as common.tile_rect: floor((m -/+ r) / tile).
template <typename scalar_t>
TileRange tile_range(scalar_t mx, scalar_t my, int32_t radius, const Grid& g) {
    if (radius <= 0 || !std::isfinite(mx) || !std::isfinite(my)) return {0, 0, -1, -1};
    const scalar_t r = static_cast<scalar_t>(radius);
    const scalar_t t = static_cast<scalar_t>(g.tile);
    return {floor_clamp<scalar_t>((mx - r) / t, g.tiles_x - 1), floor_clamp<scalar_t>((my - r) / t, g.tiles_y - 1),
            floor_clamp<scalar_t>((mx + r) / t, g.tiles_x - 1), floor_clamp<scalar_t>((my + r) / t, g.tiles_y - 1)};
}

// Indices 0..N-1 sorted by depth, ties by lower index, NaN depths last (torch.argsort(stable=True)).
std::vector<int32_t> depth_order(const torch::Tensor& depths) {
    const torch::Tensor d = depths.to(torch::kFloat64);
    const double* dp = d.data_ptr<double>();
    std::vector<int32_t> order(static_cast<size_t>(d.numel()));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [dp](int32_t i, int32_t j) {
        const double a = dp[i], b = dp[j];
        return !std::isnan(a) && (std::isnan(b) || a < b);
    });
    return order;
}

template <typename scalar_t>
Bins bin_typed(const torch::Tensor& means2d, const torch::Tensor& radii, const torch::Tensor& depths,
               const Grid& grid, int num_threads) {
    const int64_t n = means2d.size(0);
    const scalar_t* m = means2d.data_ptr<scalar_t>();
    const int32_t* rad = radii.data_ptr<int32_t>();
    std::vector<TileRange> ranges(static_cast<size_t>(n));
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) ranges[i] = tile_range<scalar_t>(m[2 * i], m[2 * i + 1], rad[i], grid);

    std::vector<int64_t> offsets(static_cast<size_t>(grid.n_tiles() + 1), 0);
    for (const TileRange& r : ranges) {
        for (int64_t ty = r.y0; ty <= r.y1 && r.x1 >= r.x0; ++ty)
            for (int64_t tx = r.x0; tx <= r.x1; ++tx) ++offsets[ty * grid.tiles_x + tx + 1];
    }
    std::partial_sum(offsets.begin(), offsets.end(), offsets.begin());

    torch::Tensor ids = torch::empty({offsets.back()}, torch::dtype(torch::kInt32));
    int32_t* idp = ids.data_ptr<int32_t>();
    std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
    for (int32_t g : depth_order(depths)) {  // front to back, so each tile list ends up sorted
        const TileRange& r = ranges[g];
        for (int64_t ty = r.y0; ty <= r.y1 && r.x1 >= r.x0; ++ty)
            for (int64_t tx = r.x0; tx <= r.x1; ++tx) idp[cursor[ty * grid.tiles_x + tx]++] = g;
    }
    torch::Tensor off = torch::from_blob(offsets.data(), {grid.n_tiles() + 1}, torch::dtype(torch::kInt64)).clone();
    return {ids, off};
}

}  // namespace

Bins bin_gaussians(const torch::Tensor& means2d, const torch::Tensor& radii, const torch::Tensor& depths,
                   const Grid& grid, int num_threads) {
    if (means2d.scalar_type() == torch::kFloat64) return bin_typed<double>(means2d, radii, depths, grid, num_threads);
    return bin_typed<float>(means2d, radii, depths, grid, num_threads);
}

}  // namespace cpu_rasterizer
