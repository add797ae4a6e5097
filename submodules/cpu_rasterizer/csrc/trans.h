// Transmittance lanes in double precision. torch's cumprod accumulates float32
// products in double, so the kernels keep T in double too (same termination
// decisions, and an accurate back-to-front recovery T_i = T_{i+1} / (1 - alpha_i)).
// For float kernels one vector of W floats maps to two vectors of
// W / 2 doubles; for double kernels it is the vector itself.
#pragma once

#include "simd.h"

namespace cpu_rasterizer {

template <typename scalar_t, int kBytes>
struct Trans;

template <int kBytes>
struct Trans<float, kBytes> {
    using V = typename Simd<float, kBytes>::V;
    static constexpr int kHalf = Simd<float, kBytes>::W / 2;
    using D = typename VecOf<double, kBytes>::type;  // kHalf doubles
    using F = typename VecOf<float, kBytes / 2>::type;
    struct T {
        D lo, hi;
    };

    // Halves of a float vector and back. Register shuffles where the compiler has
    // them (a memcpy round trip through the stack stalls store forwarding).
    static CR_INLINE void split(const V& v, F& lo, F& hi) {
#if CR_HAS_SHUFFLEVECTOR
        static_assert(kHalf == 2 || kHalf == 4, "16- or 32-byte vectors");
        if constexpr (kHalf == 2) {
            lo = __builtin_shufflevector(v, v, 0, 1);
            hi = __builtin_shufflevector(v, v, 2, 3);
        } else {
            lo = __builtin_shufflevector(v, v, 0, 1, 2, 3);
            hi = __builtin_shufflevector(v, v, 4, 5, 6, 7);
        }
#else
        std::memcpy(&lo, &v, sizeof(F));
        std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(F), sizeof(F));
#endif
    }
    static CR_INLINE V concat(const F& lo, const F& hi) {
#if CPU_RASTERIZER_X86
        // one vinsertf128 into lo's register (the generic shuffle also zeroes lo's upper half first)
        if constexpr (kHalf == 4) return __builtin_ia32_vinsertf128_ps256(__builtin_ia32_ps256_ps(lo), hi, 1);
#endif
#if CR_HAS_SHUFFLEVECTOR
        if constexpr (kHalf == 2) {
            return __builtin_shufflevector(lo, hi, 0, 1, 2, 3);
        } else {
            return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
        }
#else
        V v;
        std::memcpy(&v, &lo, sizeof(F));
        std::memcpy(reinterpret_cast<char*>(&v) + sizeof(F), &hi, sizeof(F));
        return v;
#endif
    }
    // float -> double lanes. GCC lowers __builtin_convertvector of 4 floats to 4 doubles as two-lane
    // pieces; in the AVX2 clone one vcvtps2pd does all four (same values).
    static CR_INLINE D to_double(const F& f) {
#if CPU_RASTERIZER_X86
        if constexpr (kHalf == 4) return __builtin_ia32_cvtps2pd256(f);
#endif
        return __builtin_convertvector(f, D);
    }
    static CR_INLINE F to_float(const D& d) {  // rounded to nearest
#if CPU_RASTERIZER_X86
        if constexpr (kHalf == 4) return __builtin_ia32_cvtpd2ps256(d);
#endif
        return __builtin_convertvector(d, F);
    }
    static CR_INLINE void widen(const V& v, D& lo, D& hi) {
        F a, b;
        split(v, a, b);
        lo = to_double(a);
        hi = to_double(b);
    }

    static CR_INLINE T load(const double* p) { return {cpu_rasterizer::load<D>(p), cpu_rasterizer::load<D>(p + kHalf)}; }
    static CR_INLINE void store(double* p, const T& t) {
        cpu_rasterizer::store(p, t.lo);
        cpu_rasterizer::store(p + kHalf, t.hi);
    }
    static CR_INLINE T mul(const T& t, const V& f) {  // t * (double) f
        D lo, hi;
        widen(f, lo, hi);
        return {t.lo * lo, t.hi * hi};
    }
    static CR_INLINE T div(const T& t, const V& f) {  // t / (double) f
        D lo, hi;
        widen(f, lo, hi);
        return {t.lo / lo, t.hi / hi};
    }
    static CR_INLINE V narrow(const T& t) {  // (float) t, rounded to nearest
        return concat(to_float(t.lo), to_float(t.hi));
    }
};

template <int kBytes>
struct Trans<double, kBytes> {
    using V = typename Simd<double, kBytes>::V;
    using T = V;
    static CR_INLINE T load(const double* p) { return cpu_rasterizer::load<V>(p); }
    static CR_INLINE void store(double* p, const T& t) { cpu_rasterizer::store(p, t); }
    static CR_INLINE T mul(const T& t, const V& f) { return t * f; }
    static CR_INLINE T div(const T& t, const V& f) { return t / f; }
    static CR_INLINE V narrow(const T& t) { return t; }
};

}  // namespace cpu_rasterizer
