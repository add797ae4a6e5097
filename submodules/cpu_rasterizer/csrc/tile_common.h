// Helpers shared by the forward and backward tile loops.
#pragma once

#include <algorithm>
#include <numeric>
#include <vector>

#include "tile_math.h"
#include "trans.h"

namespace cpu_rasterizer {

// One tile's pixel block and its front-to-back Gaussian list.
struct TileView {
    int64_t x0, y0;        // first pixel (image coordinates)
    int64_t rows, cols;    // pixels inside the image
    const int32_t* ids;    // Gaussian indices, front to back
    int64_t count;         // list length
};

inline TileView tile_view(const Grid& grid, const BinsView& bins, int64_t tile_id) {
    const int64_t tx = tile_id % grid.tiles_x, ty = tile_id / grid.tiles_x;
    const int64_t x0 = tx * grid.tile, y0 = ty * grid.tile;
    const int64_t* off = bins.offsets;
    return {x0,
            y0,
            std::min(grid.tile, grid.height - y0),
            std::min(grid.tile, grid.width - x0),
            bins.gauss_ids + off[tile_id],
            off[tile_id + 1] - off[tile_id]};
}

// Tile pixels as row chunks of `lanes` pixels: chunk q = row * per_row + j covers
// tile columns [lanes j, lanes (j + 1)); its state starts at element q * lanes.
struct ChunkLayout {
    int64_t lanes;
    int64_t per_row;
    int64_t n_chunks;
    ChunkLayout(int64_t tile, int64_t lanes_)
        : lanes(lanes_), per_row((tile + lanes_ - 1) / lanes_), n_chunks(tile * per_row) {}
    int64_t n_pixels() const { return n_chunks * lanes; }
    // Lanes of chunk q that are image pixels of tile v.
    int64_t valid_lanes(const TileView& v, int64_t q) const {
        const int64_t r = q / per_row, j = q % per_row;
        return r < v.rows ? std::clamp<int64_t>(v.cols - j * lanes, 0, lanes) : 0;
    }
    // Elements per tile row: row r's pixels are elements [r * row_stride(), r * row_stride() + cols).
    int64_t row_stride() const { return per_row * lanes; }
    // Row-major image index of the first pixel of tile row r.
    static int64_t image_row(const TileView& v, int64_t r, const Grid& grid) { return (v.y0 + r) * grid.width + v.x0; }
};

// Rows [r0, r1] of tile v that g's support ellipse reaches (false: g misses the tile).
template <typename scalar_t>
CR_INLINE bool tile_rows(const PackedGaussian<scalar_t>& g, const TileView& v, int64_t& r0, int64_t& r1) {
    if (g.never || !support_rows(g, v.y0, v.rows, r0, r1)) return false;
    int64_t c0, c1;
    return !g.bounded || pixel_range(static_cast<double>(g.mx), g.hx, v.x0, v.cols, c0, c1);
}

// One support chunk of a Gaussian: its chunk index and tile row (q / per_row, stored to spare the loops a
// division; it indexes SupportEvals' row tables).
struct ChunkVisit {
    int32_t q;
    int32_t r;
};

// Writes the `lanes`-pixel chunks of tile v, rows r0..r1, that g's support ellipse reaches and for which
// wanted(q) holds to visits[0, n) (row by row, left to right) and returns n. The rows' spans are computed
// kRows at a time in double vectors of kBytes; then each row writes all its per_row candidates and keeps
// those in its chunk range, without per-row branches (they mispredict more than the arithmetic costs).
template <int lanes, int kBytes, typename scalar_t, typename Wanted>
CR_INLINE int64_t collect_support_chunks(const PackedGaussian<scalar_t>& g, const TileView& v, int64_t r0, int64_t r1,
                                         int64_t per_row, Wanted&& wanted, ChunkVisit* visits) {
    using D = typename VecOf<double, kBytes>::type;
    constexpr int kRows = kBytes / static_cast<int>(sizeof(double));
    const SupportChords<scalar_t> chords(g);
    const double x0 = static_cast<double>(v.x0), cols = static_cast<double>(v.cols);
    const D row_step = lane_index<D>();
    int64_t n = 0;
    for (int64_t rb = r0; rb <= r1; rb += kRows) {
        const D py = (row_step + static_cast<double>(v.y0 + rb)) + 0.5;
        D c0, c1;
        chords.col_spans(py, x0, cols, c0, c1);
        // chunk j holds columns [lanes j, lanes j + lanes - 1]: it meets [c0, c1] (integers, c0 >= 0) iff
        // floor(c0 / lanes) <= j <= floor(c1 / lanes), i.e. 0 <= j - j_lo < count; an empty span (c0 > c1)
        // gets count 0 (small integers, exact in int32: c0 and c1 are finite, see col_spans)
        constexpr double kInvLanes = 1.0 / lanes;
        using I = typename VecOf<int32_t, kRows * sizeof(int32_t)>::type;
        const D j_lo = lanewise<LaneOp::kFloor>(c0 * kInvLanes);
        const D count = select(c0 <= c1, lanewise<LaneOp::kFloor>(c1 * kInvLanes) - j_lo + 1.0, D{});
        const I first = __builtin_convertvector(j_lo, I), counts = __builtin_convertvector(count, I);
        const int64_t rows = std::min<int64_t>(kRows, r1 - rb + 1);
        for (int64_t i = 0; i < rows; ++i) {
            const int32_t r = static_cast<int32_t>(rb + i), lo = first[i];
            const uint32_t n_in = static_cast<uint32_t>(counts[i]);
            int32_t q = r * static_cast<int32_t>(per_row);
            for (int32_t j = 0; j < per_row; ++j, ++q) {
                visits[n] = {q, r};
                n += (static_cast<uint32_t>(j - lo) < n_in) & wanted(q);
            }
        }
    }
    return n;
}

// The support chunks of one Gaussian in one tile that still need it, and their alphas, computed in a pass of
// their own before the compositing (forward) or gradient (backward) pass walks them in order: the
// evaluations are independent of each other, so the CPU overlaps their long exp chains. Per-thread, reused
// across tiles. A lane is kept (the contract does not skip the Gaussian there) exactly where its alpha is
// not 0: kept alphas are >= alpha_min > 0 (checked in bindings.cpp), skipped ones are stored as 0.
// The pixel coordinates are tables: the chunks' pixel-centre x per tile (start_tile), the rows' y offsets
// from the Gaussian's mean per Gaussian (evaluate), so a chunk's evaluation starts from loads.
template <typename scalar_t>
struct SupportEvals {
    ChunkLayout layout;
    std::vector<ChunkVisit> visits;  // [n] chunks the support reaches
    std::vector<scalar_t> alphas;    // [n][lanes] alpha, 0 where the contract skips the Gaussian
    std::vector<scalar_t> gausses;   // [n][lanes] exp(power) (backward only)
    std::vector<scalar_t> centres;   // [chunks][lanes] pixel-centre x of each chunk of the current tile
    std::vector<scalar_t> row_y;     // [rows] pixel-centre y of each row of the current tile
    std::vector<scalar_t> row_dy;    // [rows] mean y - pixel-centre y, current Gaussian (rows r0..r1)
    std::vector<scalar_t> row_cdydy; // [rows] (c dy) dy, the power's dy-only term

    explicit SupportEvals(const ChunkLayout& layout_)
        : layout(layout_), visits(layout.n_chunks), alphas(layout.n_pixels()), gausses(layout.n_pixels()),
          centres(layout.n_pixels()), row_y(layout.n_chunks / layout.per_row),
          row_dy(row_y.size()), row_cdydy(row_y.size()) {}

    // The pixel-centre coordinates of tile v (call once per tile): x = column + 0.5, y = row + 0.5.
    void start_tile(const TileView& v) {
        for (int64_t q = 0; q < layout.n_chunks; ++q) {
            const int64_t x_first = v.x0 + (q % layout.per_row) * layout.lanes;
            for (int64_t i = 0; i < layout.lanes; ++i)
                centres[q * layout.lanes + i] = static_cast<scalar_t>(static_cast<double>(x_first + i) + 0.5);
        }
        for (size_t r = 0; r < row_y.size(); ++r)
            row_y[r] = static_cast<scalar_t>(static_cast<double>(v.y0 + static_cast<int64_t>(r)) + 0.5);
    }

    // Collects and evaluates g's support chunks q in tile v, rows r0..r1, for which wanted(q) holds (the
    // caller's chunks still compositing / with gradient to pass on); returns how many there are. kGauss:
    // also keep exp(power).
    template <int kBytes, bool kGauss, typename Wanted>
    CR_INLINE int64_t evaluate(const PackedGaussian<scalar_t>& g, const TileView& v, int64_t r0, int64_t r1,
                               const Thresholds<scalar_t>& th, Wanted&& wanted) {
        using S = Simd<scalar_t, kBytes>;
        ChunkVisit* const vis = visits.data();
        const int64_t n = collect_support_chunks<S::W, kBytes>(g, v, r0, r1, layout.per_row, wanted, vis);
        scalar_t* const dys = row_dy.data();
        scalar_t* const cdydys = row_cdydy.data();
        for (int64_t r = r0; r <= r1; ++r) {
            const scalar_t dy = g.my - row_y[r];
            dys[r] = dy;
            cdydys[r] = (g.c * dy) * dy;
        }
        const scalar_t* const xs = centres.data();
        scalar_t* const als = alphas.data();
        scalar_t* const gss = gausses.data();
        for (int64_t i = 0; i < n; ++i) {
            typename S::V al, gauss;
            const ChunkVisit cv = vis[i];
            eval_chunk<scalar_t, kBytes>(g, load<typename S::V>(xs + cv.q * S::W), dys[cv.r], cdydys[cv.r], th,
                                         al, gauss);
            store(als + i * S::W, al);
            if constexpr (kGauss) store(gss + i * S::W, gauss);
        }
        return n;
    }
};

// Lanes where the Gaussian is kept: alpha != 0 (see SupportEvals).
template <typename scalar_t, int kBytes>
CR_INLINE typename Simd<scalar_t, kBytes>::M kept(const typename Simd<scalar_t, kBytes>::V& alpha) {
    return alpha != scalar_t(0);
}

// Whether to run the AVX2 clone of the tile kernels.
inline bool use_avx2(Isa isa) {
    if (isa == Isa::kGeneric) return false;
    return avx2_supported();
}

// A tile kernel and the pixels per SIMD chunk it was compiled for.
template <typename Fn>
struct TileKernel {
    Fn fn;
    int64_t lanes;
};

template <typename T>
struct NonDeduced {
    using type = T;
};

// The AVX2 build of a tile kernel when `isa` allows it and the CPU has AVX2, else the portable
// build. `avx2` is nullptr on non-x86 builds (see CR_IF_X86).
template <typename scalar_t, typename Fn>
TileKernel<Fn> pick_tile_kernel(Isa isa, Fn portable, typename NonDeduced<Fn>::type avx2) {
    if (avx2 != nullptr && use_avx2(isa)) return {avx2, Simd<scalar_t, kAvx2Bytes>::W};
    return {portable, Simd<scalar_t, kPortableBytes>::W};
}

// Channel count, a compile-time constant for the common small counts (kC > 0)
// so the per-channel loops unroll; kC = 0 reads it at run time.
template <int kC>
struct ChannelCount {
    int64_t runtime;
    constexpr int64_t n() const { return kC > 0 ? kC : runtime; }
};
constexpr int kMaxUnrolledChannels = 4;  // RGB + depth

// Everything the tile loops read.
template <typename scalar_t>
struct RasterInputs {
    std::vector<PackedGaussian<scalar_t>> packed;  // [N]
    const scalar_t* colors;                        // [N, C]
    int64_t channels;
    Grid grid;
    Thresholds<scalar_t> th;
};

// Gaussian gid's colour [C]. For a compile-time channel count (kC > 0) it is copied into `local` [kC], so the
// tile loops keep it in registers (their scratch stores may alias the colour array); else it is read in place.
template <int kC, typename scalar_t>
CR_INLINE const scalar_t* gaussian_colour(const RasterInputs<scalar_t>& in, int32_t gid, scalar_t* local) {
    const scalar_t* color = in.colors + static_cast<int64_t>(gid) * in.channels;
    if constexpr (kC > 0) {
        for (int ch = 0; ch < kC; ++ch) local[ch] = color[ch];
        return local;
    }
    return color;
}

// Inputs with the packed-Gaussian array allocated; fill it with pack_all.
template <typename scalar_t>
RasterInputs<scalar_t> make_inputs(const GaussianArrays<scalar_t>& gs, const Grid& grid,
                                   const Thresholds<scalar_t>& th) {
    return {std::vector<PackedGaussian<scalar_t>>(static_cast<size_t>(gs.n)), gs.colors, gs.channels, grid, th};
}

// Pack every Gaussian. Call from inside a parallel region (work-shared, ends with a barrier).
template <typename scalar_t>
void pack_all(RasterInputs<scalar_t>& in, const GaussianArrays<scalar_t>& gs) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < gs.n; ++i)
        in.packed[i] = pack_gaussian<scalar_t>(gs.means2d + 2 * i, gs.conics + 3 * i, gs.opacities[i], in.th.alpha_min);
}

// The per-tile lists of already packed Gaussians (binning.cpp) on up to num_threads threads (the lists do not
// depend on the count); returns a view of `out`.
template <typename scalar_t>
BinsView bin_packed(const std::vector<PackedGaussian<scalar_t>>& packed, const int32_t* radii, const double* depths,
                    const Grid& grid, const BinsOut& out, int num_threads);

// Tile lists visit Gaussians in depth order, i.e. at random addresses: fetch the
// packed data and colours of the Gaussian this many list entries ahead.
constexpr int64_t kPrefetchAhead = 16;

template <typename scalar_t>
CR_INLINE void prefetch_gaussian(const RasterInputs<scalar_t>& in, const TileView& v, int64_t k) {
    if (k < 0 || k >= v.count) return;
    const int32_t gid = v.ids[k];
    __builtin_prefetch(&in.packed[gid]);
    __builtin_prefetch(in.colors + static_cast<int64_t>(gid) * in.channels);
}

// Tiles [begin, end), longest list first (better balance under dynamic
// scheduling); empty tiles (at the end) are dropped unless keep_empty.
inline std::vector<int64_t> tile_order(const BinsView& bins, int64_t begin, int64_t end, bool keep_empty) {
    const int64_t* off = bins.offsets;
    std::vector<int64_t> order;
    order.reserve(static_cast<size_t>(end - begin));
    for (int64_t t = begin; t < end; ++t)
        if (keep_empty || off[t + 1] > off[t]) order.push_back(t);
    std::stable_sort(order.begin(), order.end(),
                     [off](int64_t a, int64_t b) { return off[a + 1] - off[a] > off[b + 1] - off[b]; });
    return order;
}

}  // namespace cpu_rasterizer
