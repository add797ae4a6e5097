// Native-width SIMD vectors (GCC / Clang vector extensions) for the tile kernels.
//
// The kernels are templates on the register width kBytes: 16 for the portable
// build (SSE2 on x86-64, NEON elsewhere) and 32 inside the AVX2 clone, which is
// compiled with target("avx2") and picked at run time (no -march flags needed).
// Vectors are exactly one register wide (wider generic vectors make GCC
// scalarise compares and selects). Rules that keep the two clones consistent
// (GCC gives these types a different alignment per instruction set): vector
// values live only in locals of always_inline code; memory is plain scalar
// arrays accessed with load / store (unaligned moves).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define CR_INLINE inline __attribute__((always_inline))

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define CR_HAS_SHUFFLEVECTOR 1
#endif
#endif
#ifndef CR_HAS_SHUFFLEVECTOR
#define CR_HAS_SHUFFLEVECTOR 0
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>  // declares the AVX builtins used inside the AVX2 clone (any, Trans)
#define CPU_RASTERIZER_X86 1
#define CR_TARGET_AVX2 __attribute__((target("avx2")))
#define CR_IF_X86(expr) (expr)  // an AVX2 kernel's address; nullptr where there are none
#else
#define CPU_RASTERIZER_X86 0
#define CR_IF_X86(expr) nullptr
#endif

namespace cpu_rasterizer {

constexpr int kPortableBytes = 16;  // SSE2 / NEON register
constexpr int kAvx2Bytes = 32;

template <typename T>
struct SameSizeInt;
template <>
struct SameSizeInt<float> {
    using type = int32_t;
};
template <>
struct SameSizeInt<double> {
    using type = int64_t;
};

// T vector of kBytes (both template parameters: GCC drops a vector_size whose
// element type is not dependent inside a template).
template <typename T, int kBytes>
struct VecOf {
    typedef T type __attribute__((vector_size(kBytes)));
};

template <typename scalar_t, int kBytes>
struct Simd {
    static constexpr int W = kBytes / static_cast<int>(sizeof(scalar_t));  // lanes
    using Int = typename SameSizeInt<scalar_t>::type;
    using V = typename VecOf<scalar_t, kBytes>::type;
    using M = typename VecOf<Int, kBytes>::type;                       // masks: -1 / 0 per lane
    using I = typename VecOf<int32_t, W * sizeof(int32_t)>::type;  // int32 lanes (list positions)
};

template <typename V, typename T>
CR_INLINE V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

template <typename T, typename V>
CR_INLINE void store(T* p, const V& v) {
    std::memcpy(p, &v, sizeof(V));
}

template <typename T, typename V>
CR_INLINE void add_to(T* p, const V& v) {
    store(p, load<V>(p) + v);
}

// mask ? a : b per lane (mask lanes -1 / 0, as wide as the value lanes). The
// vector conditional lets the compiler use blend / min / max instructions.
template <typename M, typename V>
CR_INLINE V select(const M& mask, const V& a, const V& b) {
    return mask ? a : b;
}

// x clamped lane-wise to a lower bound, select(x < limit, limit, x), or an upper one, select(x > limit,
// limit, x), a NaN x kept (the NaN-propagating clamps of the torch reference). On x86 one maxps / minps (a
// compare and a two-uop blend otherwise): (limit > x) ? limit : x is exactly maxps's definition with the
// limit first, NaN and signed zeros included, and likewise minps.
enum class Bound { kLower, kUpper };

template <Bound bound, typename V, typename T>
CR_INLINE V clamp_to(const V& x, T limit) {
    const V l = V{} + limit;
    constexpr bool kLower = bound == Bound::kLower;
#if CPU_RASTERIZER_X86
    constexpr bool kFloat = sizeof(x[0]) == sizeof(float);
    if constexpr (sizeof(V) == 32 && kFloat)
        return kLower ? __builtin_ia32_maxps256(l, x) : __builtin_ia32_minps256(l, x);
    if constexpr (sizeof(V) == 32 && !kFloat)
        return kLower ? __builtin_ia32_maxpd256(l, x) : __builtin_ia32_minpd256(l, x);
    if constexpr (sizeof(V) == 16 && kFloat) return kLower ? __builtin_ia32_maxps(l, x) : __builtin_ia32_minps(l, x);
    if constexpr (sizeof(V) == 16 && !kFloat) return kLower ? __builtin_ia32_maxpd(l, x) : __builtin_ia32_minpd(l, x);
#endif
    return kLower ? (x < l ? l : x) : (x > l ? l : x);
}

// Whether any lane of a mask is set. A 32-byte mask (the AVX2 clone, which alone has them) is one
// vmovmskps; narrower ones OR their 16-byte pieces, then one movemask (baseline SSE on x86-64), or a
// scalar OR elsewhere.
template <typename M>
CR_INLINE bool any(const M& mask) {
#if CPU_RASTERIZER_X86
    typedef float F8 __attribute__((vector_size(32)));
    typedef float F4 __attribute__((vector_size(16)));
    if constexpr (sizeof(M) == sizeof(F8)) {
        return __builtin_ia32_movmskps256((F8)mask) != 0;
    } else {
        static_assert(sizeof(M) == sizeof(F4), "16- or 32-byte masks");
        return __builtin_ia32_movmskps((F4)mask) != 0;
    }
#else
    typedef int32_t I4 __attribute__((vector_size(16)));
    I4 acc{};
    for (size_t off = 0; off < sizeof(M); off += sizeof(I4)) {
        I4 piece;
        std::memcpy(&piece, reinterpret_cast<const char*>(&mask) + off, sizeof(I4));
        acc |= piece;
    }
    return (acc[0] | acc[1] | acc[2] | acc[3]) != 0;
#endif
}

template <typename M>
CR_INLINE int64_t count(const M& mask) {
    int64_t n = 0;
    for (size_t i = 0; i < sizeof(M) / sizeof(mask[0]); ++i) n += mask[i] != 0;
    return n;
}

// Sum of the lanes: halve the vector until 4 lanes remain (vector adds), then add those.
template <typename V>
CR_INLINE double hsum(const V& v) {
    using T = decltype(v[0] + 0);
    if constexpr (sizeof(V) > 4 * sizeof(T)) {
        using H = typename VecOf<T, sizeof(V) / 2>::type;
        H lo, hi;
        std::memcpy(&lo, &v, sizeof(H));
        std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(H), sizeof(H));
        return hsum(lo + hi);
    } else {
        double s = 0.0;
        for (size_t i = 0; i < sizeof(V) / sizeof(T); ++i) s += static_cast<double>(v[i]);
        return s;
    }
}

// Lane-sized mask of an int32-lane mask (identity for float kernels, sign extension for double).
template <typename M, typename I>
CR_INLINE M mask_of(const I& m) {
    return __builtin_convertvector(m, M);
}

// 0, 1, ..., W - 1
template <typename V>
CR_INLINE V lane_index() {
    V v{};
    for (size_t i = 0; i < sizeof(V) / sizeof(v[0]); ++i) v[i] = static_cast<decltype(v[0] + 0)>(i);
    return v;
}

// Lane-wise sqrt, floor or ceil of a double vector (exact operations, so every lane equals the scalar
// std:: result): one instruction in the AVX2 clone, lane by lane elsewhere (SSE2 has no round).
enum class LaneOp { kSqrt, kFloor, kCeil };

template <LaneOp op, typename D>
CR_INLINE D lanewise(D x) {
#if CPU_RASTERIZER_X86
    if constexpr (sizeof(D) == 32) {
        if constexpr (op == LaneOp::kSqrt) {
            return __builtin_ia32_sqrtpd256(x);
        } else {
            constexpr int kDirection = op == LaneOp::kFloor ? _MM_FROUND_TO_NEG_INF : _MM_FROUND_TO_POS_INF;
            constexpr int kMode = kDirection | _MM_FROUND_NO_EXC;
            return __builtin_ia32_roundpd256(x, kMode);
        }
    }
#endif
    for (size_t i = 0; i < sizeof(D) / sizeof(double); ++i)
        x[i] = op == LaneOp::kSqrt ? std::sqrt(x[i]) : op == LaneOp::kFloor ? std::floor(x[i]) : std::ceil(x[i]);
    return x;
}

// e^x for x <= 0 (larger inputs are clamped to 0; callers discard them).
// Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, Taylor series of e^r to
// degree 7, scaled by 2^n built in the exponent bits; plain arithmetic so it
// vectorises (libm's expf would run lane by lane). The polynomial is evaluated
// in Estrin's order (depth 4 multiply-adds instead of Horner's 7): the tile
// kernels' time is bound by the latency of this chain, and Estrin took 8-10 % off
// forward and backward. Error against double exp at 0.9 G points of [-87, 0] (relative
// steps of 1e-4 below -1, 3e-7 above): at most 1.64 ulp (Horner: 1.14), mean 0.06 ulp.
constexpr float kExpLowest = -87.0f;        // exp(-87) ~ 1.6e-38, still a normal float
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;      // ln 2 = kLn2Hi + kLn2Lo, kLn2Hi exact in few bits
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: (x + magic) - magic rounds x to an integer
constexpr int32_t kFloatExponentBias = 127;
constexpr int kFloatMantissaBits = 23;

template <typename V, typename M>
CR_INLINE V exp_nonpositive_f32(V x) {
    x = clamp_to<Bound::kUpper>(clamp_to<Bound::kLower>(x, kExpLowest), 0.0f);
    const V n = (x * kLog2e + kRoundMagic) - kRoundMagic;
    const V r = (x - n * kLn2Hi) - n * kLn2Lo;
    const V r2 = r * r;
    const V r4 = r2 * r2;
    const V p01 = r + 1.0f, p23 = r * (1.0f / 6.0f) + 0.5f;
    const V p45 = r * (1.0f / 120.0f) + 1.0f / 24.0f, p67 = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
    const V p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
    const M bits = (__builtin_convertvector(n, M) + kFloatExponentBias) << kFloatMantissaBits;
    return p * (V)bits;
}

template <typename scalar_t, int kBytes>
CR_INLINE typename Simd<scalar_t, kBytes>::V exp_nonpositive(typename Simd<scalar_t, kBytes>::V x) {
    if constexpr (sizeof(scalar_t) == sizeof(float)) {
        return exp_nonpositive_f32<typename Simd<scalar_t, kBytes>::V, typename Simd<scalar_t, kBytes>::M>(x);
    } else {  // float64 path (gradient checks): libm lane by lane, the exact reference behaviour
        for (int i = 0; i < Simd<scalar_t, kBytes>::W; ++i) x[i] = std::exp(x[i]);
        return x;
    }
}

}  // namespace cpu_rasterizer
