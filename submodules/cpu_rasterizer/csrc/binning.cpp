// Tile binning: which tiles each Gaussian touches and the per-tile depth order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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

// Unsigned key with the order of the depth: -0 == +0, NaN after everything.
uint64_t depth_key(double d) {
    if (std::isnan(d)) return std::numeric_limits<uint64_t>::max();
    if (d == 0.0) d = 0.0;  // -0 ties with +0, as in torch
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    constexpr uint64_t kSign = uint64_t(1) << 63;
    return (bits & kSign) ? ~bits : (bits | kSign);  // negatives reversed below positives
}

constexpr int kRadixBits = 11;  // 6 passes over 64-bit keys, 2048 buckets
constexpr uint64_t kRadixMask = (uint64_t(1) << kRadixBits) - 1;

// Stable LSD radix sort of (key, index) pairs by key.
void radix_sort(std::vector<uint64_t>& keys, std::vector<int32_t>& index) {
    const size_t n = keys.size();
    std::vector<uint64_t> keys_tmp(n);
    std::vector<int32_t> index_tmp(n);
    std::vector<size_t> count(kRadixMask + 2);
    for (int shift = 0; shift < 64; shift += kRadixBits) {
        std::fill(count.begin(), count.end(), 0);
        for (uint64_t k : keys) ++count[((k >> shift) & kRadixMask) + 1];
        if (*std::max_element(count.begin(), count.end()) == n) continue;  // one bucket: already in order
        std::partial_sum(count.begin(), count.end(), count.begin());
        for (size_t i = 0; i < n; ++i) {
            const size_t dst = count[(keys[i] >> shift) & kRadixMask]++;
            keys_tmp[dst] = keys[i];
            index_tmp[dst] = index[i];
        }
        keys.swap(keys_tmp);
        index.swap(index_tmp);
    }
}

// Indices of the Gaussians that touch at least one tile, sorted by depth, ties by
// lower index, NaN depths last: the order of torch.argsort(depths, stable=True)
// restricted to those Gaussians.
std::vector<int32_t> depth_order(const double* depths, const std::vector<TileRange>& ranges) {
    std::vector<uint64_t> keys;
    std::vector<int32_t> order;
    keys.reserve(ranges.size());
    order.reserve(ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) {
        if (ranges[i].count() == 0) continue;
        keys.push_back(depth_key(depths[i]));
        order.push_back(static_cast<int32_t>(i));
    }
    radix_sort(keys, order);  // stable: ties keep the increasing index order
    return order;
}

}  // namespace

template <typename scalar_t>
Bins bin_gaussians(const scalar_t* means2d, const int32_t* radii, const double* depths, int64_t n,
                   const Grid& grid) {
    // Serial: a few nanoseconds per Gaussian, cheaper than waking a thread team.
    std::vector<TileRange> ranges(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ranges[i] = tile_range<scalar_t>(means2d[2 * i], means2d[2 * i + 1], radii[i], grid);

    Bins bins;
    bins.offsets.assign(static_cast<size_t>(grid.n_tiles() + 1), 0);
    for (const TileRange& r : ranges) {
        for (int64_t ty = r.y0; ty <= r.y1 && r.x1 >= r.x0; ++ty)
            for (int64_t tx = r.x0; tx <= r.x1; ++tx) ++bins.offsets[ty * grid.tiles_x + tx + 1];
    }
    std::partial_sum(bins.offsets.begin(), bins.offsets.end(), bins.offsets.begin());

    bins.gauss_ids.resize(static_cast<size_t>(bins.offsets.back()));
    std::vector<int64_t> cursor(bins.offsets.begin(), bins.offsets.end() - 1);
    for (int32_t g : depth_order(depths, ranges)) {  // front to back, so every tile list ends up sorted
        const TileRange& r = ranges[g];
        for (int64_t ty = r.y0; ty <= r.y1 && r.x1 >= r.x0; ++ty)
            for (int64_t tx = r.x0; tx <= r.x1; ++tx) bins.gauss_ids[cursor[ty * grid.tiles_x + tx]++] = g;
    }
    return bins;
}

template Bins bin_gaussians<float>(const float*, const int32_t*, const double*, int64_t, const Grid&);
template Bins bin_gaussians<double>(const double*, const int32_t*, const double*, int64_t, const Grid&);

}  // namespace cpu_rasterizer
