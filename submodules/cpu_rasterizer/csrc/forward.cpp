// Forward compositing: one OpenMP task per tile; inside a tile, Gaussians front
// to back, and for each Gaussian only the rows / row chunks its support ellipse
// reaches, the pixels of a chunk evaluated as one SIMD vector.
#include "tile_common.h"

namespace cpu_rasterizer {
namespace {

// Raw pointers into a ForwardScratch, copied into locals of the tile loop: the vector stores (memcpy, which
// may alias anything) would otherwise make the compiler reload every std::vector's data pointer, the
// thresholds and the colours on each chunk visit.
template <typename scalar_t>
struct ForwardState {
    double* trans;
    typename SameSizeInt<scalar_t>::type* done;
    int32_t* last;
    scalar_t* acc;
    scalar_t* acc_alpha;
    int64_t* live;
    int64_t plane;  // elements per colour channel of acc
};

// Per-thread working memory of one tile (reused across tiles), laid out by ChunkLayout.
template <typename scalar_t>
struct ForwardScratch {
    using Mask = typename SameSizeInt<scalar_t>::type;
    ChunkLayout layout;
    std::vector<double> trans;        // transmittance (double, like torch's cumprod)
    std::vector<Mask> done;           // -1: pixel terminated or outside the image
    std::vector<int32_t> last;        // 1 + list position of the last contributor
    std::vector<scalar_t> acc;        // [C][pixels] colour sums
    std::vector<scalar_t> acc_alpha;  // sum of weights
    std::vector<int64_t> live;        // pixels still compositing, per chunk
    SupportEvals<scalar_t> evals;     // the current Gaussian's support chunks and alphas

    ForwardScratch(int64_t tile, int64_t lanes, int64_t channels)
        : layout(tile, lanes), trans(layout.n_pixels()), done(layout.n_pixels()), last(layout.n_pixels()),
          acc(channels * layout.n_pixels()), acc_alpha(layout.n_pixels()), live(layout.n_chunks),
          evals(layout) {}

    ForwardState<scalar_t> state() {
        return {trans.data(), done.data(), last.data(), acc.data(), acc_alpha.data(), live.data(), layout.n_pixels()};
    }

    // Fresh state for tile v; returns the number of live pixels.
    int64_t reset(const TileView& v) {
        std::fill(trans.begin(), trans.end(), 1.0);
        std::fill(last.begin(), last.end(), 0);
        std::fill(acc.begin(), acc.end(), scalar_t(0));
        std::fill(acc_alpha.begin(), acc_alpha.end(), scalar_t(0));
        for (int64_t q = 0; q < layout.n_chunks; ++q) {
            const int64_t valid = layout.valid_lanes(v, q);
            for (int64_t i = 0; i < layout.lanes; ++i) done[q * layout.lanes + i] = i < valid ? 0 : -1;
            live[q] = valid;
        }
        return v.rows * v.cols;
    }

    void write(const TileView& v, const ForwardOutputs<scalar_t>& out, const Grid& grid, int64_t channels) const {
        const int64_t hw = grid.width * grid.height, plane = layout.n_pixels();
        for (int64_t r = 0; r < v.rows; ++r) {  // one copy per tile row and array
            const int64_t n = v.cols, src = r * layout.row_stride(), dst = ChunkLayout::image_row(v, r, grid);
            for (int64_t ch = 0; ch < channels; ++ch)
                std::copy_n(acc.data() + ch * plane + src, n, out.image + ch * hw + dst);
            std::copy_n(acc_alpha.data() + src, n, out.alpha + dst);
            std::copy_n(trans.data() + src, n, out.final_t + dst);
            std::copy_n(last.data() + src, n, out.n_contrib + dst);
        }
    }
};

// Composite Gaussian g (list position k) with alphas `al` (0 on lanes it skips) and colour `color` over chunk
// q; returns the number of pixels that terminated.
template <typename scalar_t, int kBytes, int kC>
CR_INLINE int64_t composite_chunk(const ForwardState<scalar_t>& s, const typename Simd<scalar_t, kBytes>::V& al,
                                  const scalar_t* color, ChannelCount<kC> channels, scalar_t t_min, int64_t q,
                                  int32_t k) {
    using S = Simd<scalar_t, kBytes>;
    using V = typename S::V;
    using M = typename S::M;
    using TR = Trans<scalar_t, kBytes>;
    const int64_t o = q * S::W;
    const M active = kept<scalar_t, kBytes>(al) & ~load<M>(s.done + o);
    if (!any(active)) return 0;
    const typename TR::T t_before = TR::load(s.trans + o);
    const V al_active = select(active, al, V{});
    typename TR::T t_after = TR::mul(t_before, scalar_t(1) - al_active);  // inactive lanes: T * 1
    const M pass = TR::narrow(t_after) >= t_min;  // stop before T would drop below t_min
    const M stop = active & ~pass;
    const M contrib = active & pass;
    V al_contrib = al_active;
    int64_t finished = 0;
    if (any(stop)) {  // rare: each pixel stops once
        store(s.done + o, load<M>(s.done + o) | stop);
        finished = count(stop);
        al_contrib = select(contrib, al, V{});
        t_after = TR::mul(t_before, scalar_t(1) - al_contrib);
    }
    if (any(contrib)) {
        const V w = al_contrib * TR::narrow(t_before);
        TR::store(s.trans + o, t_after);
        using I = typename S::I;
        const I last = load<I>(s.last + o);
        store(s.last + o, select(__builtin_convertvector(contrib, I), I{} + (k + 1), last));
        add_to(s.acc_alpha + o, w);
        scalar_t* acc = s.acc + o;
        for (int64_t ch = 0; ch < channels.n(); ++ch, acc += s.plane) add_to(acc, w * color[ch]);
    }
    return finished;
}

template <typename scalar_t, int kBytes, int kC>
CR_INLINE void forward_tile_body(const TileView& v, const RasterInputs<scalar_t>& in, ForwardScratch<scalar_t>& s,
                                 const ForwardOutputs<scalar_t>& out) {
    int64_t alive = s.reset(v);
    s.evals.start_tile(v);
    const ChannelCount<kC> channels{in.channels};
    const Thresholds<scalar_t> th = in.th;
    const ForwardState<scalar_t> st = s.state();
    const ChunkVisit* visits = s.evals.visits.data();
    const scalar_t* alphas = s.evals.alphas.data();
    scalar_t color_local[kC > 0 ? kC : 1];  // see gaussian_colour
    for (int64_t k = 0; k < kPrefetchAhead; ++k) prefetch_gaussian(in, v, k);
    for (int64_t k = 0; k < v.count && alive > 0; ++k) {
        prefetch_gaussian(in, v, k + kPrefetchAhead);
        const int32_t gid = v.ids[k];
        const PackedGaussian<scalar_t> g = in.packed[gid];  // a local copy: no aliasing with the scratch stores
        int64_t r0, r1;
        if (!tile_rows(g, v, r0, r1)) continue;
        const scalar_t* color = gaussian_colour<kC>(in, gid, color_local);
        // the chunks with pixels still compositing (a chunk is visited once per Gaussian, so this holds
        // until it is composited below)
        const auto still_compositing = [&st](int64_t q) { return st.live[q] != 0; };
        const int64_t n_visits =
            s.evals.template evaluate<kBytes, false>(g, v, r0, r1, th, still_compositing);
        for (int64_t i = 0; i < n_visits; ++i) {  // then composite them, each chunk's state in list order
            const int64_t q = visits[i].q;
            const auto al = load<typename Simd<scalar_t, kBytes>::V>(alphas + i * Simd<scalar_t, kBytes>::W);
            const int64_t n = composite_chunk<scalar_t, kBytes, kC>(st, al, color, channels, th.t_min, q,
                                                                static_cast<int32_t>(k));
            st.live[q] -= n;
            alive -= n;
        }
    }
    s.write(v, out, in.grid, in.channels);
}

// Channel-count dispatch (always inlined, so it inherits the caller's instruction set).
template <typename scalar_t, int kBytes>
CR_INLINE void forward_tile(const TileView& v, const RasterInputs<scalar_t>& in, ForwardScratch<scalar_t>& s,
                            const ForwardOutputs<scalar_t>& out) {
    static_assert(kMaxUnrolledChannels == 4, "update the cases below");
    switch (in.channels) {
        case 1: return forward_tile_body<scalar_t, kBytes, 1>(v, in, s, out);
        case 2: return forward_tile_body<scalar_t, kBytes, 2>(v, in, s, out);
        case 3: return forward_tile_body<scalar_t, kBytes, 3>(v, in, s, out);
        case 4: return forward_tile_body<scalar_t, kBytes, 4>(v, in, s, out);
        default: return forward_tile_body<scalar_t, kBytes, 0>(v, in, s, out);
    }
}

template <typename scalar_t>
void forward_tile_portable(const TileView& v, const RasterInputs<scalar_t>& in, ForwardScratch<scalar_t>& s,
                           const ForwardOutputs<scalar_t>& out) {
    forward_tile<scalar_t, kPortableBytes>(v, in, s, out);
}

#if CPU_RASTERIZER_X86
template <typename scalar_t>
CR_TARGET_AVX2 void forward_tile_avx2(const TileView& v, const RasterInputs<scalar_t>& in,
                                      ForwardScratch<scalar_t>& s, const ForwardOutputs<scalar_t>& out) {
    forward_tile<scalar_t, kAvx2Bytes>(v, in, s, out);
}
#endif

}  // namespace

template <typename scalar_t>
void composite_forward(const GaussianArrays<scalar_t>& gs, const int32_t* radii, const double* depths,
                       const Grid& grid, const Thresholds<scalar_t>& th, const ForwardOutputs<scalar_t>& out,
                       const BinsOut& bins_out, Isa isa, int num_threads) {
    const auto kernel =
        pick_tile_kernel<scalar_t>(isa, &forward_tile_portable<scalar_t>, CR_IF_X86(&forward_tile_avx2<scalar_t>));
    const auto tile_fn = kernel.fn;
    const int64_t lanes = kernel.lanes;
    RasterInputs<scalar_t> in = make_inputs(gs, grid, th);
#pragma omp parallel num_threads(threads_for(gs.n, num_threads))
    pack_all(in, gs);
    const BinsView bins = bin_packed(in.packed, radii, depths, grid, bins_out, num_threads);
    const std::vector<int64_t> tiles = tile_order(bins, 0, grid.n_tiles(), true);  // empty tiles write 0 / 1
    const int64_t n_tiles = static_cast<int64_t>(tiles.size());
    const int team = threads_for(bins.offsets[grid.n_tiles()], num_threads);
#pragma omp parallel num_threads(team)
    {
        ForwardScratch<scalar_t> scratch(grid.tile, lanes, gs.channels);
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < n_tiles; ++i) tile_fn(tile_view(grid, bins, tiles[i]), in, scratch, out);
    }
}

template void composite_forward<float>(const GaussianArrays<float>&, const int32_t*, const double*, const Grid&,
                                       const Thresholds<float>&, const ForwardOutputs<float>&, const BinsOut&, Isa,
                                       int);
template void composite_forward<double>(const GaussianArrays<double>&, const int32_t*, const double*, const Grid&,
                                        const Thresholds<double>&, const ForwardOutputs<double>&, const BinsOut&, Isa,
                                        int);

}  // namespace cpu_rasterizer
