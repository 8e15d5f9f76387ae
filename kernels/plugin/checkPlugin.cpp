// Host-side check of liblayover_plugins.so without TensorRT's libraries or a GPU: the plugin uses
// only header-defined TensorRT types, so its creator, field serialization, format negotiation,
// shape/type inference and workspace sizing can run anywhere. enqueue (the GPU part) is left to
// a TensorRT machine. Prints the creator's name, version and namespace (tests/test_kernel_build.py
// compares them with kernels/identity.py, i.e. with the plugin's schema) and exits non-zero,
// naming each failed check. Built by CMake as layover_plugin_check next to the plugin.
#include "fused_mix.h" // layover_fused_mix_workspace_size, exported by the plugin library too

#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <initializer_list>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

namespace
{

int gFailures = 0;

void expect(bool ok, char const* what)
{
    if (!ok)
    {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++gFailures;
    }
}

struct NoExprBuilder : IExprBuilder // getOutputShapes only forwards z's expressions
{
};

DynamicPluginTensorDesc tensor(std::initializer_list<int64_t> dims, DataType type,
                               TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    int32_t i = 0;
    for (int64_t v : dims)
    {
        d.desc.dims.d[i++] = v;
    }
    d.desc.type = type;
    d.desc.format = format;
    d.min = d.max = d.opt = d.desc.dims;
    return d;
}

IPluginV3* create(IPluginCreatorV3One* creator, PluginField const& field)
{
    PluginFieldCollection fc{1, &field};
    return creator->createPlugin("fused_mix", &fc, TensorRTPhase::kBUILD);
}

} // namespace

int main()
{
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    expect(n == 1 && std::strcmp(creators[0]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0,
           "one IPluginCreatorV3One creator");
    auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
    std::printf("identity: name=%s version=%s namespace=%s\n", creator->getPluginName(), creator->getPluginVersion(),
        creator->getPluginNamespace());
    PluginFieldCollection const* names = creator->getFieldNames();
    expect(names->nbFields == 1 && std::strcmp(names->fields[0].name, "layout") == 0, "field names");

    int64_t const nhwc64 = LAYOVER_NHWC; // the ONNX parser may pass INT64
    IPluginV3* fromOnnx = create(creator, PluginField("layout", &nhwc64, PluginFieldType::kINT64, 1));
    expect(fromOnnx != nullptr, "create from an INT64 field");
    auto* runtime = static_cast<IPluginV3OneRuntime*>(fromOnnx->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    expect(saved->nbFields == 1 && saved->fields[0].type == PluginFieldType::kINT32
            && *static_cast<int32_t const*>(saved->fields[0].data) == LAYOVER_NHWC,
        "serialized layout field");
    int32_t const bad = 7;
    expect(create(creator, PluginField("layout", &bad, PluginFieldType::kINT32, 1)) == nullptr, "reject bad layout");

    // An NCHW plugin rebuilt from serialized fields, as the runtime would do.
    int32_t const nchw = LAYOVER_NCHW;
    IPluginV3* plugin = create(creator, PluginField("layout", &nchw, PluginFieldType::kINT32, 1));
    IPluginV3* restored = plugin->clone();
    auto* core = static_cast<IPluginV3OneCore*>(restored->getCapabilityInterface(PluginCapabilityType::kCORE));
    expect(std::strcmp(core->getPluginName(), creator->getPluginName()) == 0
            && std::strcmp(core->getPluginVersion(), creator->getPluginVersion()) == 0
            && std::strcmp(core->getPluginNamespace(), creator->getPluginNamespace()) == 0,
        "plugin identity = creator identity");
    auto* build = static_cast<IPluginV3OneBuild*>(restored->getCapabilityInterface(PluginCapabilityType::kBUILD));
    expect(build->getNbOutputs() == 1, "one output");

    DataType const in[5] = {DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
    DataType outType{};
    expect(build->getOutputDataTypes(&outType, 1, in, 5) == 0 && outType == DataType::kFLOAT, "output type = z type");

    DimsExprs shapes[5]{};
    shapes[1].nbDims = 2;
    DimsExprs outShape{};
    NoExprBuilder builder;
    expect(build->getOutputShapes(shapes, 5, nullptr, 0, &outShape, 1, builder) == 0 && outShape.nbDims == 2,
        "output shape = z shape");

    DynamicPluginTensorDesc io[6] = {tensor({8, 768, 112, 112}, DataType::kHALF, TensorFormat::kHWC8),
        tensor({8, 6144}, DataType::kHALF), tensor({6144, 768}, DataType::kFLOAT), tensor({6144}, DataType::kFLOAT),
        tensor({1}, DataType::kFLOAT), tensor({8, 6144}, DataType::kHALF)};
    expect(build->supportsFormatCombination(0, io, 5, 1), "fp16 kHWC8 h");
    for (int32_t pos = 1; pos < 6; ++pos)
    {
        expect(build->supportsFormatCombination(pos, io, 5, 1), "fp16 activations with fp32 weights");
    }
    io[0].desc.format = TensorFormat::kHWC;
    expect(!build->supportsFormatCombination(0, io, 5, 1), "kHWC needs fp32");
    io[0].desc.format = TensorFormat::kCHW32;
    expect(!build->supportsFormatCombination(0, io, 5, 1), "vectorized CHW formats refused");
    io[0].desc.format = TensorFormat::kHWC8;
    io[4].desc.type = DataType::kHALF;
    expect(!build->supportsFormatCombination(4, io, 5, 1), "b_sl must share w_rs's type");
    io[4].desc.type = DataType::kFLOAT;
    io[5].desc.type = DataType::kFLOAT;
    expect(!build->supportsFormatCombination(5, io, 5, 1), "output must share z's type");
    io[5].desc.type = DataType::kHALF;
    expect(build->configurePlugin(io, 5, io + 5, 1) == 0, "configure NCHW");
    io[2].desc.dims.d[1] = 512;
    expect(build->configurePlugin(io, 5, io + 5, 1) != 0, "w_rs's C must be h's channels");
    io[2].desc.dims.d[1] = 768, io[2].desc.dims.d[0] = 4096;
    expect(build->configurePlugin(io, 5, io + 5, 1) != 0, "w_rs's N must be z's width");
    io[2].desc.dims.d[0] = 6144;

    auto* nhwcBuild = static_cast<IPluginV3OneBuild*>(fromOnnx->getCapabilityInterface(PluginCapabilityType::kBUILD));
    expect(!nhwcBuild->supportsFormatCombination(0, io, 5, 1), "NHWC h refuses channels-last formats");
    io[0].desc.dims = tensor({8, 112, 112, 768}, DataType::kHALF).desc.dims;
    expect(nhwcBuild->configurePlugin(io, 5, io + 5, 1) == 0, "configure 4-D NHWC");
    io[0].desc.dims = tensor({8, 768, 112, 112}, DataType::kHALF).desc.dims;

    // Build-time workspace covers the launcher's exact need at every batch up to the max.
    size_t const ws = build->getWorkspaceSize(io, 5, io + 5, 1);
    for (int64_t b = 1; b <= 8; ++b)
    {
        LayoverFusedMixArgs a{};
        a.h_dtype = LAYOVER_F16, a.z_dtype = LAYOVER_F16, a.w_dtype = LAYOVER_F32;
        a.B = b, a.C = 768, a.S1 = 1, a.S2 = 112 * 112, a.N = 6144;
        a.h_stride_b = a.C * a.S2, a.h_stride_c = 1, a.h_stride_s2 = a.C;
        expect(layover_fused_mix_workspace_size(&a) <= ws, "workspace bound (channels-last)");
        a.h_stride_c = a.S2, a.h_stride_s2 = 1;
        expect(layover_fused_mix_workspace_size(&a) <= ws, "workspace bound (NCHW)");
    }

    for (IPluginV3* p : {fromOnnx, plugin, restored})
    {
        delete p;
    }
    if (gFailures == 0)
    {
        std::printf("layover plugin host checks passed\n");
    }
    return gFailures == 0 ? 0 : 1;
}
