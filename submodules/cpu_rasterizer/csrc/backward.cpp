// Backward compositing: one OpenMP task per tile, Gaussians back to front, the
// same row-chunk walk as the forward pass (one SIMD vector per chunk).
//
// For a pixel with weights w_i = alpha_i T_i, out = sum_i w_i col_i, A = sum_i w_i
// and upstream gradients g (colour) and gA (alpha), let cg_i = col_i . g + gA and
// S_i = sum_{j > i} w_j cg_j (later contributors). Then
//   dL/dcol_i   = w_i g
//   dL/dalpha_i = T_i cg_i - S_i / (1 - alpha_i)
// T_i is recovered back to front from the final transmittance: T_i = T_{i+1} / (1 - alpha_i).
// alpha_i = min(alpha_max, o e^power): no gradient to o or power where clamped.
// Per-Gaussian sums over a tile go to that (tile, Gaussian) pair's slot and are
// reduced in a fixed order (grad_slots.h): results are bit-reproducible.
#ifdef _OPENMP
#include <omp.h>
#endif

#include "grad_slots.h"
#include "tile_common.h"

namespace cpu_rasterizer {
namespace {

// Lane-wise sums of one Gaussian over the chunks of one tile: the geometric
// terms are vector locals of the inlined tile loop, the colour sums ([C][lanes])
// live in scratch memory.
template <typename V>
struct GeoSums {
    V mx{}, my{}, a{}, b{}, c{}, o{};  // dpower * d(power)/d(.) pieces, signs applied at commit
};

// The colour sums of one Gaussian over the chunks of one tile.
template <typename scalar_t>
struct Partial {
    std::vector<scalar_t> color;  // [C][lanes]

    Partial(int64_t lanes, int64_t channels) : color(channels * lanes) {}
    void clear() { std::fill(color.begin(), color.end(), scalar_t(0)); }
};

// Raw pointers into a BackwardScratch, copied into locals of the tile loop (see ForwardState in forward.cpp:
// the vector stores would otherwise make the compiler reload every data pointer on each chunk visit).
template <typename scalar_t>
struct BackwardState {
    double* trans;
    scalar_t* later;
    const int32_t* last;
    const scalar_t* grad;
    const scalar_t* grad_alpha;
    scalar_t* part_color;  // [C][lanes]
    int64_t plane;         // elements per colour channel of grad
};

// Per-thread working memory of one tile, laid out by ChunkLayout.
template <typename scalar_t>
struct BackwardScratch {
    ChunkLayout layout;
    std::vector<double> trans;         // transmittance after the current Gaussian
    std::vector<scalar_t> later;       // S: sum over later contributors of w cg
    std::vector<int32_t> last;         // 1 + list position of the last contributor (0 outside the image)
    std::vector<int32_t> last_max;     // [chunks] max of last over the chunk
    std::vector<scalar_t> grad;        // [C][pixels] upstream colour gradient
    std::vector<scalar_t> grad_alpha;  // upstream alpha gradient
    Partial<scalar_t> part;
    SupportEvals<scalar_t> evals;      // the current Gaussian's support chunks and alphas

    BackwardScratch(int64_t tile, int64_t lanes, int64_t channels)
        : layout(tile, lanes), trans(layout.n_pixels()), later(layout.n_pixels()), last(layout.n_pixels()),
          last_max(layout.n_chunks), grad(channels * layout.n_pixels()), grad_alpha(layout.n_pixels()),
          part(lanes, channels), evals(layout) {}

    BackwardState<scalar_t> state() {
        return {trans.data(), later.data(), last.data(), grad.data(), grad_alpha.data(), part.color.data(),
                layout.n_pixels()};
    }

    // Load tile v's forward state and upstream gradients; returns the longest contributor count.
    int32_t load(const TileView& v, const BackwardInputs<scalar_t>& bi, const Grid& grid, int64_t channels) {
        const int64_t hw = grid.width * grid.height, plane = layout.n_pixels();
        std::fill(trans.begin(), trans.end(), 0.0);
        std::fill(later.begin(), later.end(), scalar_t(0));
        std::fill(last.begin(), last.end(), 0);
        std::fill(grad.begin(), grad.end(), scalar_t(0));
        std::fill(grad_alpha.begin(), grad_alpha.end(), scalar_t(0));
        const int32_t count = static_cast<int32_t>(v.count);
        int32_t longest = 0;
        for (int64_t r = 0; r < v.rows; ++r) {  // one copy per tile row and array
            const int64_t n = v.cols, dst = r * layout.row_stride(), src = ChunkLayout::image_row(v, r, grid);
            std::copy_n(bi.final_t + src, n, trans.data() + dst);
            std::copy_n(bi.grad_alpha + src, n, grad_alpha.data() + dst);
            for (int64_t ch = 0; ch < channels; ++ch)
                std::copy_n(bi.grad_image + ch * hw + src, n, grad.data() + ch * plane + dst);
            for (int64_t i = 0; i < n; ++i) last[dst + i] = std::min(bi.n_contrib[src + i], count);
        }
        for (int64_t q = 0; q < layout.n_chunks; ++q) {  // lanes outside the image hold 0
            const int64_t first = q * layout.lanes;
            last_max[q] = *std::max_element(last.data() + first, last.data() + first + layout.lanes);
            // Pixels with no upstream gradient (a tool mask, a masked border) give every Gaussian exactly zero
            // gradient (each term is a product with one of these values): their chunks are skipped.
            bool any_gradient = false;
            for (int64_t i = 0; i < layout.lanes; ++i) any_gradient |= grad_alpha[first + i] != scalar_t(0);
            for (int64_t ch = 0; ch < channels; ++ch)
                for (int64_t i = 0; i < layout.lanes; ++i) any_gradient |= grad[ch * plane + first + i] != scalar_t(0);
            if (!any_gradient) last_max[q] = 0;
            longest = std::max(longest, last_max[q]);
        }
        return longest;
    }
};

// Gradients of Gaussian g (list position k) over chunk q (pixel-centre x px, dy = g.my - pixel-centre y),
// given its alphas `al` (0 on lanes it skips) and exp(power) `gauss`; returns whether any lane had gradient to pass on.
template <typename scalar_t, int kBytes, int kC>
CR_INLINE bool backward_chunk(const BackwardState<scalar_t>& s, const PackedGaussian<scalar_t>& g,
                              const scalar_t* color, ChannelCount<kC> channels, scalar_t alpha_max, int64_t q,
                              const typename Simd<scalar_t, kBytes>::V& px, scalar_t dy, int32_t k,
                              const typename Simd<scalar_t, kBytes>::V& al,
                              const typename Simd<scalar_t, kBytes>::V& gauss,
                              GeoSums<typename Simd<scalar_t, kBytes>::V>& geo) {
    using S = Simd<scalar_t, kBytes>;
    using V = typename S::V;
    using M = typename S::M;
    using TR = Trans<scalar_t, kBytes>;
    const int64_t o = q * S::W, plane = s.plane;
    const M active = kept<scalar_t, kBytes>(al) & mask_of<M>(load<typename S::I>(s.last + o) > k);
    if (!any(active)) return false;
    const V one_minus = scalar_t(1) - select(active, al, V{});  // exactly 1 on inactive lanes: T / 1
    const typename TR::T t_before = TR::div(TR::load(s.trans + o), one_minus);
    TR::store(s.trans + o, t_before);
    const V t = TR::narrow(t_before);
    const V w = select(active, al * t, V{});
    const scalar_t* grad = s.grad + o;
    V cg = load<V>(s.grad_alpha + o);
    for (int64_t ch = 0; ch < channels.n(); ++ch) cg += color[ch] * load<V>(grad + ch * plane);
    const V later = load<V>(s.later + o);
    const V d_alpha = select(active, t * cg - later / one_minus, V{});
    store(s.later + o, later + w * cg);
    const V raw = g.o * gauss;
    const V d_raw = select(active & (raw <= alpha_max), d_alpha, V{});
    const V d_power = raw * d_raw;
    const V dx = g.mx - px;
    geo.mx += d_power * (g.a * dx + g.b * dy);
    geo.my += d_power * (g.c * dy + g.b * dx);
    geo.a += d_power * (dx * dx);
    geo.b += d_power * (dx * dy);
    geo.c += d_power * (dy * dy);
    geo.o += gauss * d_raw;
    for (int64_t ch = 0; ch < channels.n(); ++ch) add_to(s.part_color + ch * S::W, w * load<V>(grad + ch * plane));
    return true;
}

// The slots of one tile: slot k belongs to the tile's k-th Gaussian.
template <typename scalar_t>
struct TileSlots {
    scalar_t* data;  // [count, stride]
    int32_t* stamp;  // [count]
    int64_t stride;
    int32_t mark;  // 1 + batch index
};

// power = -0.5 (a dx^2 + c dy^2) - b dx dy, dx = mean_x - px: apply the derivative signs and store.
template <typename scalar_t, int kBytes, int kC>
CR_INLINE void commit(const GeoSums<typename Simd<scalar_t, kBytes>::V>& geo, const Partial<scalar_t>& part,
                      int64_t k, ChannelCount<kC> channels, const TileSlots<scalar_t>& slots) {
    using V = typename Simd<scalar_t, kBytes>::V;
    using G = GradSlots<scalar_t>;
    constexpr int64_t W = Simd<scalar_t, kBytes>::W;
    scalar_t* dst = slots.data + k * slots.stride;
    dst[G::kMx] = static_cast<scalar_t>(-hsum(geo.mx));
    dst[G::kMy] = static_cast<scalar_t>(-hsum(geo.my));
    dst[G::kA] = static_cast<scalar_t>(-0.5 * hsum(geo.a));
    dst[G::kB] = static_cast<scalar_t>(-hsum(geo.b));
    dst[G::kC] = static_cast<scalar_t>(-0.5 * hsum(geo.c));
    dst[G::kO] = static_cast<scalar_t>(hsum(geo.o));
    for (int64_t ch = 0; ch < channels.n(); ++ch)
        dst[G::kColor + ch] = static_cast<scalar_t>(hsum(load<V>(part.color.data() + ch * W)));
    slots.stamp[k] = slots.mark;
}

template <typename scalar_t, int kBytes, int kC>
CR_INLINE void backward_tile_body(const TileView& v, const RasterInputs<scalar_t>& in,
                                  const BackwardInputs<scalar_t>& bi, BackwardScratch<scalar_t>& s,
                                  const TileSlots<scalar_t>& slots) {
    using V = typename Simd<scalar_t, kBytes>::V;
    constexpr int64_t W = Simd<scalar_t, kBytes>::W;
    const ChannelCount<kC> channels{in.channels};
    const int32_t longest = s.load(v, bi, in.grid, in.channels);
    s.evals.start_tile(v);
    const Thresholds<scalar_t> th = in.th;
    const BackwardState<scalar_t> st = s.state();
    const int32_t* last_max = s.last_max.data();
    const ChunkVisit* visits = s.evals.visits.data();
    const scalar_t* alphas = s.evals.alphas.data();
    const scalar_t* gausses = s.evals.gausses.data();
    const scalar_t* centres = s.evals.centres.data();
    const scalar_t* row_dy = s.evals.row_dy.data();
    scalar_t color_local[kC > 0 ? kC : 1];  // see gaussian_colour
    for (int64_t k = longest - 1; k >= longest - kPrefetchAhead; --k) prefetch_gaussian(in, v, k);
    for (int32_t k = longest - 1; k >= 0; --k) {
        prefetch_gaussian(in, v, k - kPrefetchAhead);
        const int32_t gid = v.ids[k];
        const PackedGaussian<scalar_t> g = in.packed[gid];  // a local copy: no aliasing with the scratch stores
        int64_t r0, r1;
        if (!tile_rows(g, v, r0, r1)) continue;
        const scalar_t* color = gaussian_colour<kC>(in, gid, color_local);
        GeoSums<V> geo;
        // the chunks where g is before some pixel's last contributor and the pixels have upstream gradient
        const int64_t n_visits = s.evals.template evaluate<kBytes, true>(
            g, v, r0, r1, th, [last_max, k](int64_t q) { return last_max[q] > k; });
        bool touched = false;
        for (int64_t i = 0; i < n_visits; ++i) {  // then their gradients
            const ChunkVisit& cv = visits[i];
            touched |= backward_chunk<scalar_t, kBytes, kC>(st, g, color, channels, th.alpha_max, cv.q,
                                                            load<V>(centres + cv.q * W), row_dy[cv.r], k,
                                                            load<V>(alphas + i * W), load<V>(gausses + i * W), geo);
        }
        if (touched) {
            commit<scalar_t, kBytes, kC>(geo, s.part, k, channels, slots);
            s.part.clear();
        }
    }
}

// Channel-count dispatch (always inlined, so it inherits the caller's instruction set).
template <typename scalar_t, int kBytes>
CR_INLINE void backward_tile(const TileView& v, const RasterInputs<scalar_t>& in, const BackwardInputs<scalar_t>& bi,
                             BackwardScratch<scalar_t>& s, const TileSlots<scalar_t>& slots) {
    static_assert(kMaxUnrolledChannels == 4, "update the cases below");
    switch (in.channels) {
        case 1: return backward_tile_body<scalar_t, kBytes, 1>(v, in, bi, s, slots);
        case 2: return backward_tile_body<scalar_t, kBytes, 2>(v, in, bi, s, slots);
        case 3: return backward_tile_body<scalar_t, kBytes, 3>(v, in, bi, s, slots);
        case 4: return backward_tile_body<scalar_t, kBytes, 4>(v, in, bi, s, slots);
        default: return backward_tile_body<scalar_t, kBytes, 0>(v, in, bi, s, slots);
    }
}

template <typename scalar_t>
void backward_tile_portable(const TileView& v, const RasterInputs<scalar_t>& in, const BackwardInputs<scalar_t>& bi,
                            BackwardScratch<scalar_t>& s, const TileSlots<scalar_t>& slots) {
    backward_tile<scalar_t, kPortableBytes>(v, in, bi, s, slots);
}

#if CPU_RASTERIZER_X86
template <typename scalar_t>
CR_TARGET_AVX2 void backward_tile_avx2(const TileView& v, const RasterInputs<scalar_t>& in,
                                       const BackwardInputs<scalar_t>& bi, BackwardScratch<scalar_t>& s,
                                       const TileSlots<scalar_t>& slots) {
    backward_tile<scalar_t, kAvx2Bytes>(v, in, bi, s, slots);
}
#endif

// The calling thread's share of the n Gaussians, for zeroing and reduction.
inline Share owned_range(int64_t n) {
#ifdef _OPENMP
    return share_of(n, omp_get_thread_num(), omp_get_num_threads());
#else
    return share_of(n, 0, 1);
#endif
}

}  // namespace

template <typename scalar_t>
void composite_backward(const GaussianArrays<scalar_t>& gs, const BinsView& bins, const Grid& grid,
                        const Thresholds<scalar_t>& th, const BackwardInputs<scalar_t>& bi,
                        const Gradients<scalar_t>& out, Isa isa, int num_threads) {
    const auto kernel =
        pick_tile_kernel<scalar_t>(isa, &backward_tile_portable<scalar_t>, CR_IF_X86(&backward_tile_avx2<scalar_t>));
    const auto tile_fn = kernel.fn;
    const int64_t lanes = kernel.lanes;
    RasterInputs<scalar_t> in = make_inputs(gs, grid, th);
    const int64_t n_tiles = grid.n_tiles(), channels = gs.channels;
    const int64_t capacity = slot_capacity(bins.offsets, n_tiles, GradSlots<scalar_t>::kColor + channels,
                                           channels * grid.width * grid.height);
    const std::vector<SlotBatch> batches = slot_batches(bins.offsets, n_tiles, capacity);
    std::vector<std::vector<int64_t>> batch_tiles;  // non-empty tiles of each batch, longest first
    for (const SlotBatch& b : batches) batch_tiles.push_back(tile_order(bins, b.tile_begin, b.tile_end, false));
    GradSlots<scalar_t> slots(capacity, channels);
    const int team = threads_for(std::max(bins.offsets[n_tiles], gs.n), num_threads);
#pragma omp parallel num_threads(team)
    {
        pack_all(in, gs);
        BackwardScratch<scalar_t> scratch(grid.tile, lanes, channels);
        const auto [lo, hi] = owned_range(gs.n);
        zero_gradients(out, lo, hi, channels);
        for (size_t b = 0; b < batches.size(); ++b) {
            const std::vector<int64_t>& tiles = batch_tiles[b];
            const int32_t mark = static_cast<int32_t>(b) + 1;
#pragma omp for schedule(dynamic, 1)
            for (size_t i = 0; i < tiles.size(); ++i) {
                const int64_t first = bins.offsets[tiles[i]] - batches[b].pair_begin;
                const TileSlots<scalar_t> tile_slots{slots.data.data() + first * slots.stride,
                                                     slots.stamp.data() + first, slots.stride, mark};
                tile_fn(tile_view(grid, bins, tiles[i]), in, bi, scratch, tile_slots);
            }  // implicit barrier: every slot of the batch is written
            reduce_slots(slots, batches[b], mark - 1, bins.gauss_ids, lo, hi, out, channels);
#pragma omp barrier
        }
    }
}

template void composite_backward<float>(const GaussianArrays<float>&, const BinsView&, const Grid&,
                                        const Thresholds<float>&, const BackwardInputs<float>&,
                                        const Gradients<float>&, Isa, int);
template void composite_backward<double>(const GaussianArrays<double>&, const BinsView&, const Grid&,
                                         const Thresholds<double>&, const BackwardInputs<double>&,
                                         const Gradients<double>&, Isa, int);

}  // namespace cpu_rasterizer
