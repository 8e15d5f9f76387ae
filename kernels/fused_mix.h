/* The fused Layover branch as a plain C API (CUDA C++ implementation in fused_mix.cu).
 *
 *   p  = mean of h over its spatial/token axes         (B, C)
 *   z' = α·sigmoid(W_rs·p) + (1−α)·z,  α = sigmoid(w_sl·z + b_sl)
 *
 * h is described as a strided 4-D view (B, C, S1, S2) in elements, so NCHW, channels-last
 * NCHW, NHWC and (B, L, C) tokens (S1 = 1, S2 = L) all go through one entry point. Callers pass
 * S1 = H and S2 = W as they are (kernels/geometry.py h_view for ctypes, describeH in the plugin);
 * layover_fused_mix merges them into one axis itself where the strides allow (merge_spatial in
 * fused_mix.cu). Arithmetic is float32 whatever the I/O type.
 * Used by ctypes (kernels/cuda_lib.py) and by the TensorRT plugin (kernels/plugin/).
 */
#ifndef LAYOVER_FUSED_MIX_H
#define LAYOVER_FUSED_MIX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Element types; the values match nothing external on purpose (kernels/cuda_lib.py mirrors them,
 * tests/test_kernel_cuda.py checks it). */
enum LayoverDType { LAYOVER_F32 = 0, LAYOVER_F16 = 1, LAYOVER_BF16 = 2 };

/* The logical layout of h, also the ONNX plugin node's `layout` attribute (LAYOUT_CODES in
 * kernels/identity.py; tests/test_kernel_identity.py checks they agree). */
enum LayoverLayout { LAYOVER_NCHW = 0, LAYOVER_NHWC = 1, LAYOVER_NLC = 2 };

typedef struct LayoverFusedMixArgs {
    const void* h;       /* (B, C, S1, S2) view, dtype h_dtype */
    int32_t h_dtype;
    int64_t B, C, S1, S2;
    int64_t h_stride_b, h_stride_c, h_stride_s1, h_stride_s2;
    const void* z;       /* (B, N), dtype z_dtype; the output has the same dtype */
    int32_t z_dtype;
    int64_t N;
    int64_t z_stride_b, z_stride_n;
    const void* w_rs;    /* (N, C), dtype w_dtype; w_sl (N,) and b_sl (1,) share it */
    const void* w_sl;
    const void* b_sl;
    int32_t w_dtype;
    int64_t w_rs_stride_n, w_rs_stride_c, w_sl_stride;
    void* out;           /* (B, N), dtype z_dtype */
    int64_t out_stride_b, out_stride_n;
} LayoverFusedMixArgs;

/* Bytes of device workspace layover_fused_mix needs: (B·C + B) floats (channel sums and α). */
size_t layover_fused_mix_workspace_size(const LayoverFusedMixArgs* args);

/* The workspace for every batch size up to max_B, for a TensorRT plugin sizing it at build time. */
size_t layover_fused_mix_max_workspace_size(int64_t max_B, int64_t C);

/* Enqueue a memset and two kernels on `stream` (a cudaStream_t). Returns 0 on success, else a
 * cudaError_t value, or -1 for invalid arguments (bad dtype, workspace too small, C too large). */
int layover_fused_mix(const LayoverFusedMixArgs* args, void* workspace, size_t workspace_bytes,
                      void* stream);

#ifdef __cplusplus
}
#endif

#endif /* LAYOVER_FUSED_MIX_H */
