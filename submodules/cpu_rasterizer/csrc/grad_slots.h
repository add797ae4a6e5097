// Deterministic accumulation of per-Gaussian gradients.
//
// Each (tile, Gaussian) pair of a batch of tiles owns a slot: the tile's thread
// writes the Gaussian's sums over that tile into it (no sharing, no locks).
// After the batch, thread t adds the slots of Gaussians [N t / T, N (t+1) / T)
// to the outputs in pair order (tile, then depth), so every gradient is summed
// in the same order whatever the thread count or scheduling: training runs are
// bit-reproducible. Batches are contiguous tile ranges sized so the slots stay
// within a memory budget.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "rasterizer.h"

namespace cpu_rasterizer {

// Slot budget: at least this many scalars, or twice the output image if larger.
constexpr int64_t kMinSlotScalars = int64_t(1) << 20;

template <typename scalar_t>
struct GradSlots {
    enum Column { kMx, kMy, kA, kB, kC, kO, kColor };  // then C colour columns
    int64_t stride;
    std::vector<scalar_t> data;  // [capacity, stride]
    std::vector<int32_t> stamp;  // [capacity]: 1 + batch that last wrote the slot

    GradSlots(int64_t capacity, int64_t channels)
        : stride(kColor + channels), data(capacity * stride), stamp(capacity, 0) {}
};

// A batch: tiles [tile_begin, tile_end) in image order, their pairs [pair_begin, pair_end).
struct SlotBatch {
    int64_t tile_begin, tile_end, pair_begin, pair_end;
};

// Split the tiles into batches of at most `capacity` pairs (a larger tile is a batch of its own).
inline std::vector<SlotBatch> slot_batches(const int64_t* offsets, int64_t n_tiles, int64_t capacity) {
    std::vector<SlotBatch> batches;
    int64_t begin = 0;
    while (begin < n_tiles) {
        int64_t end = begin + 1;
        while (end < n_tiles && offsets[end + 1] - offsets[begin] <= capacity) ++end;
        batches.push_back({begin, end, offsets[begin], offsets[end]});
        begin = end;
    }
    return batches;
}

// Slots needed for the largest batch under the budget.
inline int64_t slot_capacity(const int64_t* offsets, int64_t n_tiles, int64_t stride, int64_t image_scalars) {
    int64_t capacity = std::max(kMinSlotScalars, 2 * image_scalars) / stride;
    for (int64_t t = 0; t < n_tiles; ++t) capacity = std::max(capacity, offsets[t + 1] - offsets[t]);
    return std::min(capacity, offsets[n_tiles]);
}

// Zero the outputs of Gaussians [lo, hi).
template <typename scalar_t>
void zero_gradients(const Gradients<scalar_t>& out, int64_t lo, int64_t hi, int64_t channels) {
    std::fill(out.means2d + 2 * lo, out.means2d + 2 * hi, scalar_t(0));
    std::fill(out.conics + 3 * lo, out.conics + 3 * hi, scalar_t(0));
    std::fill(out.opacities + lo, out.opacities + hi, scalar_t(0));
    std::fill(out.colors + channels * lo, out.colors + channels * hi, scalar_t(0));
}

// Add the slots written in batch `batch_index` for Gaussians [lo, hi), in pair order.
template <typename scalar_t>
void reduce_slots(const GradSlots<scalar_t>& slots, const SlotBatch& batch, int32_t batch_index,
                  const int32_t* gauss_ids, int64_t lo, int64_t hi, const Gradients<scalar_t>& out,
                  int64_t channels) {
    using G = GradSlots<scalar_t>;
    for (int64_t p = batch.pair_begin; p < batch.pair_end; ++p) {
        const int64_t gid = gauss_ids[p], s = p - batch.pair_begin;
        if (gid < lo || gid >= hi || slots.stamp[s] != batch_index + 1) continue;
        const scalar_t* v = slots.data.data() + s * slots.stride;
        out.means2d[2 * gid] += v[G::kMx];
        out.means2d[2 * gid + 1] += v[G::kMy];
        out.conics[3 * gid] += v[G::kA];
        out.conics[3 * gid + 1] += v[G::kB];
        out.conics[3 * gid + 2] += v[G::kC];
        out.opacities[gid] += v[G::kO];
        scalar_t* col = out.colors + gid * channels;
        for (int64_t ch = 0; ch < channels; ++ch) col[ch] += v[G::kColor + ch];
    }
}

}  // namespace cpu_rasterizer
