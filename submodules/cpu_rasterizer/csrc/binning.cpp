// Tile binning: the tiles each Gaussian's support ellipse meets and the per-tile depth order.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "tile_common.h"

namespace cpu_rasterizer {
namespace {

// floor(v), clamped to [0, hi] in floating point, then truncated to an integer,
// exactly like torch.floor(v).clamp(0, hi).long().
int64_t floor_clamp(double v, int64_t hi) {
    double f = std::floor(v);
    f = std::max(f, 0.0);
    f = std::min(f, static_cast<double>(hi));
    return static_cast<int64_t>(f);
}

// Appends to `hits` the tiles of the contract for g (common.tile_pairs), row-major.
template <typename scalar_t>
void support_tiles(const PackedGaussian<scalar_t>& g, const Grid& grid, std::vector<int32_t>& hits) {
    if (g.never) return;
    if (!g.bounded) {  // no usable ellipse: every tile
        for (int64_t t = 0; t < grid.n_tiles(); ++t) hits.push_back(static_cast<int32_t>(t));
        return;
    }
    const double mx = g.mx, my = g.my, tile = static_cast<double>(grid.tile);
    const int64_t x0 = floor_clamp((mx - g.hx) / tile, grid.tiles_x - 1);
    const int64_t x1 = floor_clamp((mx + g.hx) / tile, grid.tiles_x - 1);
    const int64_t y0 = floor_clamp((my - g.hy) / tile, grid.tiles_y - 1);
    const int64_t y1 = floor_clamp((my + g.hy) / tile, grid.tiles_y - 1);
    constexpr double kInset = 0.5 - kSpanMarginPx;  // pixel centres, widened by the margin
    for (int64_t ty = y0; ty <= y1; ++ty) {
        const double py0 = static_cast<double>(ty * grid.tile) + kInset;
        const double py1 = static_cast<double>(std::min(ty * grid.tile + grid.tile, grid.height)) - kInset;
        for (int64_t tx = x0; tx <= x1; ++tx) {
            const double px0 = static_cast<double>(tx * grid.tile) + kInset;
            const double px1 = static_cast<double>(std::min(tx * grid.tile + grid.tile, grid.width)) - kInset;
            if (ellipse_meets_rect(g, px0, px1, py0, py1)) hits.push_back(static_cast<int32_t>(ty * grid.tiles_x + tx));
        }
    }
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

// Indices of the Gaussians that touch at least one tile (first[i + 1] > first[i]), sorted by
// depth, ties by lower index, NaN depths last: the order of torch.argsort(depths, stable=True)
// restricted to those Gaussians.
std::vector<int32_t> depth_order(const double* depths, const std::vector<int64_t>& first) {
    std::vector<uint64_t> keys;
    std::vector<int32_t> order;
    const size_t n = first.size() - 1;
    keys.reserve(n);
    order.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        if (first[i + 1] == first[i]) continue;
        keys.push_back(depth_key(depths[i]));
        order.push_back(static_cast<int32_t>(i));
    }
    radix_sort(keys, order);  // stable: ties keep the increasing index order
    return order;
}

// Each Gaussian's tiles: hits[first[i]:first[i+1]], row-major per Gaussian, Gaussians in index order. The
// team splits the Gaussians into contiguous ranges and the ranges' lists are concatenated in order, so the
// result does not depend on the thread count.
template <typename scalar_t>
void gaussian_tiles(const std::vector<PackedGaussian<scalar_t>>& packed, const int32_t* radii, const Grid& grid,
                    int num_threads, std::vector<int64_t>& first, std::vector<int32_t>& hits) {
    const int64_t n = static_cast<int64_t>(packed.size());
    first.assign(static_cast<size_t>(n + 1), 0);
    const int team = threads_for(n, num_threads);
    std::vector<std::vector<int32_t>> part(static_cast<size_t>(team));
#pragma omp parallel for num_threads(team) schedule(static)
    for (int t = 0; t < team; ++t) {
        const Share range = share_of(n, t, team);
        std::vector<int32_t>& mine = part[static_cast<size_t>(t)];
        mine.reserve(static_cast<size_t>(4 * (range.hi - range.lo)));
        for (int64_t i = range.lo; i < range.hi; ++i) {
            first[i] = static_cast<int64_t>(mine.size());  // within the range; shifted below
            if (radii[i] > 0) support_tiles(packed[i], grid, mine);
        }
    }
    int64_t base = 0;
    hits.clear();
    for (int t = 0; t < team; ++t) {
        const Share range = share_of(n, t, team);
        for (int64_t i = range.lo; i < range.hi; ++i) first[i] += base;
        base += static_cast<int64_t>(part[static_cast<size_t>(t)].size());
    }
    first[n] = base;
    hits.reserve(static_cast<size_t>(base));
    for (const std::vector<int32_t>& p : part) hits.insert(hits.end(), p.begin(), p.end());
}

}  // namespace

template <typename scalar_t>
BinsView bin_packed(const std::vector<PackedGaussian<scalar_t>>& packed, const int32_t* radii, const double* depths,
                    const Grid& grid, const BinsOut& out, int num_threads) {
    std::vector<int64_t> first;  // Gaussian i's tiles: hits[first[i]:first[i+1]]
    std::vector<int32_t> hits;
    gaussian_tiles(packed, radii, grid, num_threads, first, hits);

    // Serial from here: a counting pass and a scatter over the pairs, a few nanoseconds each.
    int64_t* offsets = out.offsets;
    std::fill(offsets, offsets + grid.n_tiles() + 1, 0);
    for (int32_t t : hits) ++offsets[t + 1];
    std::partial_sum(offsets, offsets + grid.n_tiles() + 1, offsets);
    int32_t* ids = out.alloc_ids(offsets[grid.n_tiles()]);
    std::vector<int64_t> cursor(offsets, offsets + grid.n_tiles());
    for (int32_t g : depth_order(depths, first)) {  // front to back, so every tile list ends up sorted
        for (int64_t h = first[g]; h < first[g + 1]; ++h) ids[cursor[hits[h]]++] = g;
    }
    return {ids, offsets};
}

template <typename scalar_t>
void bin_gaussians(const GaussianArrays<scalar_t>& gs, const int32_t* radii, const double* depths, const Grid& grid,
                   scalar_t alpha_min, const BinsOut& out) {
    std::vector<PackedGaussian<scalar_t>> packed(static_cast<size_t>(gs.n));
    for (int64_t i = 0; i < gs.n; ++i)
        packed[i] = pack_gaussian<scalar_t>(gs.means2d + 2 * i, gs.conics + 3 * i, gs.opacities[i], alpha_min);
    bin_packed(packed, radii, depths, grid, out, 1);
}

template BinsView bin_packed<float>(const std::vector<PackedGaussian<float>>&, const int32_t*, const double*,
                                    const Grid&, const BinsOut&, int);
template BinsView bin_packed<double>(const std::vector<PackedGaussian<double>>&, const int32_t*, const double*,
                                     const Grid&, const BinsOut&, int);
template void bin_gaussians<float>(const GaussianArrays<float>&, const int32_t*, const double*, const Grid&, float,
                                   const BinsOut&);
template void bin_gaussians<double>(const GaussianArrays<double>&, const int32_t*, const double*, const Grid&,
                                    double, const BinsOut&);

}  // namespace cpu_rasterizer
