// The fused Layover branch in CUDA C++: a memset and two launches, as in triton_fused_mix.py.
//
// 0. cudaMemsetAsync zeroes the fp32 channel sums p (B, C) in the workspace.
// 1. pool_sum: blocks tile (spatial chunk, channel block, image) and read h once. Threads walk
//    the unit-stride axis of memory (spatial for NCHW memory, channels for channels-last and
//    tokens), so warps issue coalesced loads in either format. Each block atomically adds its
//    channel sums into p (one small buffer, rather than per-chunk partials that every mix block
//    would re-reduce); block (0, 0, b) also computes α for image b (a reduction over N that
//    needs nothing from the pooling, so it costs no extra launch).
// 2. mix: needs the complete pooling (a grid-wide dependency, hence a second launch): one warp
//    per output row n computes u = W_rs[n]·p + b_rs[n] for up to 8 images at once (W_rs is read
//    once per 8 images), then z' = z + α·u (residual) or α·sigmoid(u) + (1−α)·z (paper). The mix
//    is a uniform branch on an argument, not a template: one kernel serves both forms.
// The atomic adds make the last bit of p depend on the order blocks finish in.
#include "fused_mix.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Each thread here keeps 8 scalar loads in flight (Triton's programs hold 16-byte vectors), so
// the grid aims for enough 256-thread blocks to fill every SM of an H100/H200 (8 per SM):
// about 4 MB of h in flight, what the memory's bandwidth-latency product asks for.
constexpr int64_t kTargetBlocks = 2048;
constexpr int kChanFastC = 64;              // channels-last: 64 channels x 4 rows per block
constexpr int kChanFastRows = kThreads / kChanFastC;
constexpr int kSpatialFastC = kWarps;       // NCHW memory: one warp per channel
constexpr int kMaxImagesPerMix = 8;
constexpr size_t kMaxMixSmem = 48 * 1024;   // default dynamic shared memory limit
constexpr int kRowsPerMixBlock = 32;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// z and the weights are small next to h: a uniform runtime switch beats 27 instantiations.
__device__ __forceinline__ float load_f32(const void* p, int64_t i, int32_t dtype) {
    switch (dtype) {
        case LAYOVER_F16: return __half2float(static_cast<const __half*>(p)[i]);
        case LAYOVER_BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
        default: return static_cast<const float*>(p)[i];
    }
}

__device__ __forceinline__ void store_from_f32(void* p, int64_t i, int32_t dtype, float v) {
    switch (dtype) {
        case LAYOVER_F16: static_cast<__half*>(p)[i] = __float2half(v); break;
        case LAYOVER_BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
        default: static_cast<float*>(p)[i] = v;
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

// The spatial-axis merge, done here once for every caller (ctypes and the TensorRT plugin alike,
// which pass S1 = H and S2 = W as they are): when the two spatial axes form one arithmetic
// progression (stride_s1 == S2 * stride_s2, true for every contiguous or channels-last tensor, or
// S1 == 1) they become one axis S1 = 1, S2 = S1 * S2, and pool_sum skips the div/mod per element.
// The Python twin of this rule, for the Triton kernel's own grid: merge_spatial in kernels/geometry.py.
LayoverFusedMixArgs merge_spatial(LayoverFusedMixArgs a) {
    if (a.S1 == 1 || a.h_stride_s1 == a.S2 * a.h_stride_s2) {
        a.S2 *= a.S1;
        a.S1 = 1;
        a.h_stride_s1 = 0;
    }
    return a;
}

// The launch grid of pool_sum and mix; depends only on the shape and strides, not on the GPU.
struct Grid {
    bool chan_fast;
    int64_t c_blocks, chunk, n_split;  // grid of pool_sum: (n_split, c_blocks, B)
    int images_per_mix;
};

Grid make_grid(const LayoverFusedMixArgs& a) {
    Grid g;
    const int64_t S = a.S1 * a.S2;
    g.chan_fast = a.h_stride_c == 1 && a.h_stride_s2 != 1;
    const int64_t block_c = g.chan_fast ? kChanFastC : kSpatialFastC;
    const int64_t block_s = g.chan_fast ? 32 : 256;  // >= 8 loads per thread per chunk
    g.c_blocks = (a.C + block_c - 1) / block_c;
    const int64_t s_blocks = (S + block_s - 1) / block_s;
    int64_t want = (kTargetBlocks + a.B * g.c_blocks - 1) / (a.B * g.c_blocks);
    want = want < s_blocks ? want : s_blocks;
    want = want > 1 ? want : 1;
    g.chunk = (s_blocks + want - 1) / want * block_s;
    g.n_split = (S + g.chunk - 1) / g.chunk;
    int64_t imgs = static_cast<int64_t>(kMaxMixSmem / (sizeof(float) * a.C));
    imgs = imgs < kMaxImagesPerMix ? imgs : kMaxImagesPerMix;
    g.images_per_mix = static_cast<int>(imgs < a.B ? imgs : a.B);
    return g;
}

// Offset of flat spatial index s; S1 == 1 after merge_spatial for every contiguous/channels-last h.
__device__ __forceinline__ int64_t spatial_offset(int64_t s, const LayoverFusedMixArgs& a) {
    return a.S1 == 1 ? s * a.h_stride_s2 : (s / a.S2) * a.h_stride_s1 + (s % a.S2) * a.h_stride_s2;
}

__device__ void gate(const LayoverFusedMixArgs& a, int64_t b, float* alpha) {
    __shared__ float red[kWarps];
    float acc = 0.f;
    for (int64_t n = threadIdx.x; n < a.N; n += kThreads)
        acc += load_f32(a.z, b * a.z_stride_b + n * a.z_stride_n, a.z_dtype) *
               load_f32(a.w_sl, n * a.w_sl_stride, a.w_dtype);
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float logit = load_f32(a.b_sl, 0, a.w_dtype);
        for (int w = 0; w < kWarps; ++w) logit += red[w];
        alpha[b] = sigmoid(logit);
    }
}

template <typename TH>
__global__ void __launch_bounds__(kThreads)
pool_sum(LayoverFusedMixArgs a, Grid grid, float* psum, float* alpha) {
    const int64_t split = blockIdx.x, b = blockIdx.z, S = a.S1 * a.S2;
    const int64_t s_begin = split * grid.chunk;
    const int64_t s_end = s_begin + grid.chunk < S ? s_begin + grid.chunk : S;
    const TH* h = static_cast<const TH*>(a.h) + b * a.h_stride_b;
    float* out = psum + b * a.C;
    if (grid.chan_fast) {
        __shared__ float red[kChanFastRows][kChanFastC];
        const int lane = threadIdx.x % kChanFastC, row = threadIdx.x / kChanFastC;
        const int64_t c = blockIdx.y * kChanFastC + lane;
        float acc = 0.f;
        if (c < a.C) {
#pragma unroll 8
            for (int64_t s = s_begin + row; s < s_end; s += kChanFastRows)
                acc += to_f32(h[c * a.h_stride_c + spatial_offset(s, a)]);
        }
        red[row][lane] = acc;
        __syncthreads();
        if (row == 0 && c < a.C) {
            for (int r = 1; r < kChanFastRows; ++r) acc += red[r][lane];
            atomicAdd(out + c, acc);
        }
    } else {
        const int lane = threadIdx.x % 32;
        const int64_t c = blockIdx.y * kSpatialFastC + threadIdx.x / 32;
        float acc = 0.f;
        if (c < a.C) {
            const TH* hc = h + c * a.h_stride_c;
#pragma unroll 8
            for (int64_t s = s_begin + lane; s < s_end; s += 32) acc += to_f32(hc[spatial_offset(s, a)]);
        }
        acc = warp_sum(acc);
        if (lane == 0 && c < a.C) atomicAdd(out + c, acc);
    }
    if (blockIdx.x == 0 && blockIdx.y == 0) {
        __syncthreads();
        gate(a, b, alpha);
    }
}

__global__ void __launch_bounds__(kThreads)
mix(LayoverFusedMixArgs a, Grid grid, const float* psum, const float* alpha) {
    extern __shared__ float p[];  // [images][C]
    const int64_t b0 = static_cast<int64_t>(blockIdx.y) * grid.images_per_mix;
    const int imgs = static_cast<int>(a.B - b0 < grid.images_per_mix ? a.B - b0 : grid.images_per_mix);
    const float inv_s = 1.f / static_cast<float>(a.S1 * a.S2);
    for (int64_t i = threadIdx.x; i < imgs * a.C; i += kThreads) p[i] = psum[b0 * a.C + i] * inv_s;
    __syncthreads();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int r = warp; r < kRowsPerMixBlock; r += kWarps) {
        const int64_t n = static_cast<int64_t>(blockIdx.x) * kRowsPerMixBlock + r;
        if (n >= a.N) break;
        float acc[kMaxImagesPerMix] = {};
        for (int64_t c = lane; c < a.C; c += 32) {
            const float w = load_f32(a.w_rs, n * a.w_rs_stride_n + c * a.w_rs_stride_c, a.w_dtype);
#pragma unroll
            for (int j = 0; j < kMaxImagesPerMix; ++j)
                if (j < imgs) acc[j] += w * p[j * a.C + c];
        }
#pragma unroll
        for (int j = 0; j < kMaxImagesPerMix; ++j) {
            if (j >= imgs) break;
            const float dot = warp_sum(acc[j]);
            if (lane == 0) {
                const int64_t b = b0 + j;
                const float al = alpha[b];
                const float u = dot + load_f32(a.b_rs, n * a.b_rs_stride, a.w_dtype);
                const float zv = load_f32(a.z, b * a.z_stride_b + n * a.z_stride_n, a.z_dtype);
                store_from_f32(a.out, b * a.out_stride_b + n * a.out_stride_n, a.z_dtype,
                               a.mix == LAYOVER_MIX_PAPER ? al * sigmoid(u) + (1.f - al) * zv : zv + al * u);
            }
        }
    }
}

size_t psum_bytes(int64_t B, int64_t C) { return static_cast<size_t>(B * C) * sizeof(float); }

bool valid(const LayoverFusedMixArgs* a) {
    const auto ok_dtype = [](int32_t d) { return d == LAYOVER_F32 || d == LAYOVER_F16 || d == LAYOVER_BF16; };
    const bool ok_mix = a && (a->mix == LAYOVER_MIX_PAPER || a->mix == LAYOVER_MIX_RESIDUAL);
    return ok_mix && ok_dtype(a->h_dtype) && ok_dtype(a->z_dtype) && ok_dtype(a->w_dtype) && a->B > 0 &&
           a->C > 0 && a->N > 0 && a->S1 > 0 && a->S2 > 0 &&
           static_cast<size_t>(a->C) * sizeof(float) <= kMaxMixSmem;
}

}  // namespace

extern "C" size_t layover_fused_mix_workspace_size(const LayoverFusedMixArgs* args) {
    if (!valid(args)) return 0;
    return psum_bytes(args->B, args->C) + static_cast<size_t>(args->B) * sizeof(float);
}

extern "C" size_t layover_fused_mix_max_workspace_size(int64_t max_B, int64_t C) {
    return psum_bytes(max_B, C) + static_cast<size_t>(max_B) * sizeof(float);
}

extern "C" int layover_fused_mix(const LayoverFusedMixArgs* args, void* workspace,
                                 size_t workspace_bytes, void* stream) {
    if (!valid(args) || workspace_bytes < layover_fused_mix_workspace_size(args)) return -1;
    // Reported below through cudaGetLastError, which also holds any earlier, unrelated error of this
    // thread: drop that first (the call that made it already returned it; a sticky error recurs anyway).
    (void)cudaGetLastError();
    const LayoverFusedMixArgs a = merge_spatial(*args);
    const Grid grid = make_grid(a);
    auto* psum = static_cast<float*>(workspace);
    auto* alpha = reinterpret_cast<float*>(static_cast<char*>(workspace) + psum_bytes(a.B, a.C));
    auto s = static_cast<cudaStream_t>(stream);
    const cudaError_t zeroed = cudaMemsetAsync(psum, 0, psum_bytes(a.B, a.C), s);
    if (zeroed != cudaSuccess) return static_cast<int>(zeroed);
    const dim3 pool_grid(static_cast<unsigned>(grid.n_split), static_cast<unsigned>(grid.c_blocks),
                         static_cast<unsigned>(a.B));
    switch (a.h_dtype) {
        case LAYOVER_F16: pool_sum<__half><<<pool_grid, kThreads, 0, s>>>(a, grid, psum, alpha); break;
        case LAYOVER_BF16: pool_sum<__nv_bfloat16><<<pool_grid, kThreads, 0, s>>>(a, grid, psum, alpha); break;
        default: pool_sum<float><<<pool_grid, kThreads, 0, s>>>(a, grid, psum, alpha);
    }
    const dim3 mix_grid(static_cast<unsigned>((a.N + kRowsPerMixBlock - 1) / kRowsPerMixBlock),
                        static_cast<unsigned>((a.B + grid.images_per_mix - 1) / grid.images_per_mix));
    const size_t smem = sizeof(float) * grid.images_per_mix * a.C;
    mix<<<mix_grid, kThreads, smem, s>>>(a, grid, psum, alpha);
    return static_cast<int>(cudaGetLastError());
}
