// LayoverFusedMix IPluginV3 plugin: shape/format negotiation, field serialization and the
// mapping from TensorRT tensor descriptors to the strided view the CUDA launcher takes.
#include "fusedMixPlugin.h"

#include "fused_mix.h"

#include <algorithm>
#include <exception>

using namespace nvinfer1;

namespace layover
{
namespace
{

constexpr int32_t kNbInputs = 6;
constexpr int32_t kH = 0, kZ = 1, kWRs = 2, kBRs = 3, kWSl = 4, kBSl = 5, kOut = 6;

bool isFloatType(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

int32_t toDType(DataType t)
{
    return t == DataType::kHALF ? LAYOVER_F16 : LAYOVER_F32;
}

bool validLayout(int64_t layout)
{
    return layout == LAYOVER_NCHW || layout == LAYOVER_NHWC || layout == LAYOVER_NLC;
}

bool validMix(int64_t mix)
{
    return mix == LAYOVER_MIX_PAPER || mix == LAYOVER_MIX_RESIDUAL;
}

// Two extents agree unless both are known (build-time dims may be -1: dynamic) and differ.
bool agrees(int64_t a, int64_t b)
{
    return a < 0 || b < 0 || a == b;
}

// The channel extent of h in `layout`.
int64_t channels(Dims const& h, int32_t layout)
{
    return layout == LAYOVER_NCHW ? h.d[1] : h.d[h.nbDims - 1];
}

// A plugin field read as an integer: the ONNX parser may hand attributes over as INT32 or INT64.
bool readInt(PluginField const& f, int64_t& value)
{
    if (f.data == nullptr || f.length != 1)
    {
        return false;
    }
    if (f.type == PluginFieldType::kINT32)
    {
        value = *static_cast<int32_t const*>(f.data);
        return true;
    }
    if (f.type == PluginFieldType::kINT64)
    {
        value = *static_cast<int64_t const*>(f.data);
        return true;
    }
    return false;
}

// h as (B, C, S1, S2) with element strides, for the formats supportsFormatCombination allows.
// H and W go in as they are: layover_fused_mix merges them (merge_spatial in fused_mix.cu), so
// this path runs the same kernel branch as the ctypes one.
void describeH(LayoverFusedMixArgs& a, Dims const& d, TensorFormat format, int32_t layout)
{
    if (layout == LAYOVER_NLC)
    {
        a.B = d.d[0], a.S1 = 1, a.S2 = d.d[1], a.C = d.d[2];
        a.h_stride_b = a.S2 * a.C, a.h_stride_c = 1, a.h_stride_s1 = 0, a.h_stride_s2 = a.C;
        return;
    }
    if (layout == LAYOVER_NHWC)
    {
        a.B = d.d[0], a.S1 = d.d[1], a.S2 = d.d[2], a.C = d.d[3];
        a.h_stride_b = a.S1 * a.S2 * a.C, a.h_stride_c = 1, a.h_stride_s1 = a.S2 * a.C, a.h_stride_s2 = a.C;
        return;
    }
    a.B = d.d[0], a.C = d.d[1], a.S1 = d.d[2], a.S2 = d.d[3];
    if (format == TensorFormat::kLINEAR)
    {
        a.h_stride_b = a.C * a.S1 * a.S2, a.h_stride_c = a.S1 * a.S2, a.h_stride_s1 = a.S2, a.h_stride_s2 = 1;
        return;
    }
    // kHWC (FP32) or kHWC8 (FP16, channels padded to a multiple of 8): channels-last memory.
    int64_t const cPad = format == TensorFormat::kHWC8 ? (a.C + 7) / 8 * 8 : a.C;
    a.h_stride_b = a.S1 * a.S2 * cPad, a.h_stride_c = 1, a.h_stride_s1 = a.S2 * cPad, a.h_stride_s2 = cPad;
}

} // namespace

FusedMixPlugin::FusedMixPlugin(int32_t layout, int32_t mix)
    : mLayout(layout)
    , mMix(mix)
    , mField{PluginField("layout", &mLayout, PluginFieldType::kINT32, 1),
          PluginField("mix", &mMix, PluginFieldType::kINT32, 1)}
    , mFields{2, mField}
{
}

IPluginCapability* FusedMixPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    }
    return nullptr;
}

IPluginV3* FusedMixPlugin::clone() noexcept
{
    try
    {
        return new FusedMixPlugin(mLayout, mMix);
    }
    catch (std::exception const&)
    {
        return nullptr;
    }
}

char const* FusedMixPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* FusedMixPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* FusedMixPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t FusedMixPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    int32_t const hRank = mLayout == LAYOVER_NLC ? 3 : 4;
    if (nbInputs != kNbInputs || nbOutputs != 1 || in[kH].desc.dims.nbDims != hRank || in[kZ].desc.dims.nbDims != 2
        || in[kWRs].desc.dims.nbDims != 2 || in[kBRs].desc.dims.nbDims != 1 || in[kWSl].desc.dims.nbDims != 1
        || in[kBSl].desc.dims.nbDims != 1)
    {
        return -1;
    }
    // W_rs is (N, C): N = z's width, C = h's channels; b_rs and w_sl have N entries, b_sl one.
    Dims const& w = in[kWRs].desc.dims;
    int64_t const n = in[kZ].desc.dims.d[1];
    bool const ok = agrees(w.d[0], n) && agrees(w.d[1], channels(in[kH].desc.dims, mLayout))
        && agrees(in[kBRs].desc.dims.d[0], n) && agrees(in[kWSl].desc.dims.d[0], n)
        && agrees(in[kBSl].desc.dims.d[0], 1) && agrees(in[kZ].desc.dims.d[0], in[kH].desc.dims.d[0]);
    return ok ? 0 : -1;
}

int32_t FusedMixPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != kNbInputs)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[kZ];
    return 0;
}

int32_t FusedMixPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        return -1;
    }
    outputs[0] = inputs[kZ]; // z' has z's shape (B, N)
    return 0;
}

bool FusedMixPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t /*nbInputs*/, int32_t /*nbOutputs*/) noexcept
{
    PluginTensorDesc const& d = inOut[pos].desc;
    if (!isFloatType(d.type))
    {
        return false;
    }
    if (pos == kH)
    {
        // Channels-last formats only make sense when dim 1 is the channel axis (NCHW).
        bool const channelsLast = mLayout == LAYOVER_NCHW
            && ((d.type == DataType::kFLOAT && d.format == TensorFormat::kHWC)
                || (d.type == DataType::kHALF && d.format == TensorFormat::kHWC8));
        return d.format == TensorFormat::kLINEAR || channelsLast;
    }
    if (d.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == kBRs || pos == kWSl || pos == kBSl) // b_rs, w_sl, b_sl share w_rs's type
    {
        return d.type == inOut[kWRs].desc.type;
    }
    if (pos == kOut)
    {
        return d.type == inOut[kZ].desc.type;
    }
    return true; // z, w_rs: FP32 or FP16
}

int32_t FusedMixPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t FusedMixPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    Dims const& hMax = inputs[kH].max;
    return layover_fused_mix_max_workspace_size(hMax.d[0], channels(hMax, mLayout));
}

int32_t FusedMixPlugin::onShapeChange(
    PluginTensorDesc const* /*in*/, int32_t /*nbInputs*/, PluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept
{
    return 0; // enqueue reads the shapes it needs from its descriptors
}

int32_t FusedMixPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    LayoverFusedMixArgs a{};
    describeH(a, inputDesc[kH].dims, inputDesc[kH].format, mLayout);
    a.h = inputs[kH];
    a.h_dtype = toDType(inputDesc[kH].type);
    a.z = inputs[kZ];
    a.z_dtype = toDType(inputDesc[kZ].type);
    a.N = inputDesc[kZ].dims.d[1];
    a.z_stride_b = a.N, a.z_stride_n = 1;
    a.w_rs = inputs[kWRs], a.b_rs = inputs[kBRs], a.w_sl = inputs[kWSl], a.b_sl = inputs[kBSl];
    a.w_dtype = toDType(inputDesc[kWRs].type);
    a.w_rs_stride_n = a.C, a.w_rs_stride_c = 1, a.b_rs_stride = 1, a.w_sl_stride = 1;
    a.out = outputs[0];
    a.out_stride_b = outputDesc[0].dims.d[1], a.out_stride_n = 1;
    a.mix = mMix;
    size_t const bytes = layover_fused_mix_max_workspace_size(a.B, a.C);
    return layover_fused_mix(&a, workspace, bytes, stream) == 0 ? 0 : -1;
}

IPluginV3* FusedMixPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources
}

PluginFieldCollection const* FusedMixPlugin::getFieldsToSerialize() noexcept
{
    return &mFields;
}

FusedMixPluginCreator::FusedMixPluginCreator()
    : mField{PluginField("layout", nullptr, PluginFieldType::kINT32, 1),
          PluginField("mix", nullptr, PluginFieldType::kINT32, 1)}
    , mFields{2, mField}
{
}

IPluginV3* FusedMixPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        // layout defaults to NCHW; mix has no default (the schema requires it): a node without it
        // would otherwise compute one form where the model was trained with the other.
        int64_t layout = LAYOVER_NCHW, mix = -1;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            std::string const name(f.name);
            if (name == "layout")
            {
                readInt(f, layout);
            }
            else if (name == "mix")
            {
                readInt(f, mix);
            }
        }
        bool const ok = validLayout(layout) && validMix(mix);
        return ok ? new FusedMixPlugin(static_cast<int32_t>(layout), static_cast<int32_t>(mix)) : nullptr;
    }
    catch (std::exception const&)
    {
        return nullptr;
    }
}

PluginFieldCollection const* FusedMixPluginCreator::getFieldNames() noexcept
{
    return &mFields;
}

char const* FusedMixPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* FusedMixPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* FusedMixPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

} // namespace layover
