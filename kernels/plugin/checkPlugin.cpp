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

IPluginV3* create(IPluginCreatorV3One* creator, std::initializer_list<PluginField> fields)
{
    PluginField copy[2];
    int32_t n = 0;
    for (PluginField const& f : fields)
    {
        copy[n++] = f;
    }
    PluginFieldCollection fc{n, copy};
    return creator->createPlugin("fused_mix", &fc, TensorRTPhase::kBUILD);
}

int32_t fieldValue(PluginFieldCollection const* fc, char const* name)
{
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        if (std::strcmp(fc->fields[i].name, name) == 0 && fc->fields[i].type == PluginFieldType::kINT32)
        {
            return *static_cast<int32_t const*>(fc->fields[i].data);
        }
    }
    return -1;
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
    expect(names->nbFields == 2 && std::strcmp(names->fields[0].name, "layout") == 0
            && std::strcmp(names->fields[1].name, "mix") == 0,
        "field names");

    int64_t const nhwc64 = LAYOVER_NHWC, residual64 = LAYOVER_MIX_RESIDUAL; // the ONNX parser may pass INT64
    IPluginV3* fromOnnx = create(creator, {PluginField("layout", &nhwc64, PluginFieldType::kINT64, 1),
                                              PluginField("mix", &residual64, PluginFieldType::kINT64, 1)});
    expect(fromOnnx != nullptr, "create from INT64 fields");
    auto* runtime = static_cast<IPluginV3OneRuntime*>(fromOnnx->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
    expect(saved->nbFields == 2 && fieldValue(saved, "layout") == LAYOVER_NHWC
            && fieldValue(saved, "mix") == LAYOVER_MIX_RESIDUAL,
        "serialized layout and mix fields (INT32)");
    int32_t const bad = 7, paper = LAYOVER_MIX_PAPER, nchw = LAYOVER_NCHW;
    expect(create(creator, {PluginField("layout", &bad, PluginFieldType::kINT32, 1),
                            PluginField("mix", &paper, PluginFieldType::kINT32, 1)}) == nullptr,
        "reject bad layout");
    expect(create(creator, {PluginField("layout", &nchw, PluginFieldType::kINT32, 1),
                            PluginField("mix", &bad, PluginFieldType::kINT32, 1)}) == nullptr,
        "reject bad mix");
    expect(create(creator, {PluginField("layout", &nchw, PluginFieldType::kINT32, 1)}) == nullptr,
        "reject a node without mix (no default form)");

    // An NCHW paper-mix plugin rebuilt from its serialized fields, as the runtime would do.
    IPluginV3* plugin = create(creator, {PluginField("layout", &nchw, PluginFieldType::kINT32, 1),
                                            PluginField("mix", &paper, PluginFieldType::kINT32, 1)});
    auto* pluginRuntime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* fields = pluginRuntime->getFieldsToSerialize();
    IPluginV3* restored = creator->createPlugin("fused_mix", fields, TensorRTPhase::kRUNTIME);
    expect(restored != nullptr, "re-create from serialized fields");
    auto* restoredRuntime
        = static_cast<IPluginV3OneRuntime*>(restored->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    expect(fieldValue(restoredRuntime->getFieldsToSerialize(), "mix") == LAYOVER_MIX_PAPER
            && fieldValue(restoredRuntime->getFieldsToSerialize(), "layout") == LAYOVER_NCHW,
        "serialization round trip keeps layout and mix");
    IPluginV3* cloned = restored->clone();
    auto* clonedRuntime = static_cast<IPluginV3OneRuntime*>(cloned->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    expect(fieldValue(clonedRuntime->getFieldsToSerialize(), "mix") == LAYOVER_MIX_PAPER, "clone keeps mix");
    auto* core = static_cast<IPluginV3OneCore*>(restored->getCapabilityInterface(PluginCapabilityType::kCORE));
    expect(std::strcmp(core->getPluginName(), creator->getPluginName()) == 0
            && std::strcmp(core->getPluginVersion(), creator->getPluginVersion()) == 0
            && std::strcmp(core->getPluginNamespace(), creator->getPluginNamespace()) == 0,
        "plugin identity = creator identity");
    auto* build = static_cast<IPluginV3OneBuild*>(restored->getCapabilityInterface(PluginCapabilityType::kBUILD));
    expect(build->getNbOutputs() == 1, "one output");

    DataType const in[6] = {DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT,
        DataType::kFLOAT};
    DataType outType{};
    expect(build->getOutputDataTypes(&outType, 1, in, 6) == 0 && outType == DataType::kFLOAT, "output type = z type");
    expect(build->getOutputDataTypes(&outType, 1, in, 5) != 0, "five inputs (a version-1 node) refused");

    DimsExprs shapes[6]{};
    shapes[1].nbDims = 2;
    DimsExprs outShape{};
    NoExprBuilder builder;
    expect(build->getOutputShapes(shapes, 6, nullptr, 0, &outShape, 1, builder) == 0 && outShape.nbDims == 2,
        "output shape = z shape");

    // h, z, w_rs, b_rs, w_sl, b_sl, out: BiT-R50x3 @1, fp16 channels-last h, fp32 weights
    DynamicPluginTensorDesc io[7] = {tensor({8, 768, 112, 112}, DataType::kHALF, TensorFormat::kHWC8),
        tensor({8, 6144}, DataType::kHALF), tensor({6144, 768}, DataType::kFLOAT), tensor({6144}, DataType::kFLOAT),
        tensor({6144}, DataType::kFLOAT), tensor({1}, DataType::kFLOAT), tensor({8, 6144}, DataType::kHALF)};
    expect(build->supportsFormatCombination(0, io, 6, 1), "fp16 kHWC8 h");
    for (int32_t pos = 1; pos < 7; ++pos)
    {
        expect(build->supportsFormatCombination(pos, io, 6, 1), "fp16 activations with fp32 weights");
    }
    io[0].desc.format = TensorFormat::kHWC;
    expect(!build->supportsFormatCombination(0, io, 6, 1), "kHWC needs fp32");
    io[0].desc.format = TensorFormat::kCHW32;
    expect(!build->supportsFormatCombination(0, io, 6, 1), "vectorized CHW formats refused");
    io[0].desc.format = TensorFormat::kHWC8;
    for (int32_t pos = 3; pos < 6; ++pos)
    {
        io[pos].desc.type = DataType::kHALF;
        expect(!build->supportsFormatCombination(pos, io, 6, 1), "b_rs, w_sl and b_sl must share w_rs's type");
        io[pos].desc.type = DataType::kFLOAT;
    }
    io[6].desc.type = DataType::kFLOAT;
    expect(!build->supportsFormatCombination(6, io, 6, 1), "output must share z's type");
    io[6].desc.type = DataType::kHALF;
    expect(build->configurePlugin(io, 6, io + 6, 1) == 0, "configure NCHW");
    expect(build->configurePlugin(io, 5, io + 6, 1) != 0, "configure refuses five inputs");

    // W_rs must be (N, C) for z's N and h's C; b_rs and w_sl N long (dynamic -1 extents pass).
    auto const refused = [&](int32_t pos, int32_t axis, int64_t value, char const* what) {
        int64_t const saved = io[pos].desc.dims.d[axis];
        io[pos].desc.dims.d[axis] = value;
        expect(build->configurePlugin(io, 6, io + 6, 1) != 0, what);
        io[pos].desc.dims.d[axis] = saved;
    };
    refused(2, 1, 767, "w_rs with another C than h's channels");
    refused(2, 0, 6143, "w_rs with another N than z's");
    refused(3, 0, 6143, "b_rs with another N than z's");
    refused(4, 0, 1, "w_sl with another N than z's");
    io[0].desc.dims.d[0] = io[1].desc.dims.d[0] = -1;
    expect(build->configurePlugin(io, 6, io + 6, 1) == 0, "configure with a dynamic batch");
    io[0].desc.dims.d[0] = io[1].desc.dims.d[0] = 8;

    auto* nhwcBuild = static_cast<IPluginV3OneBuild*>(fromOnnx->getCapabilityInterface(PluginCapabilityType::kBUILD));
    expect(!nhwcBuild->supportsFormatCombination(0, io, 6, 1), "NHWC h refuses channels-last formats");
    DynamicPluginTensorDesc nhwc[7] = {tensor({8, 112, 112, 768}, DataType::kHALF), io[1], io[2], io[3], io[4], io[5],
        io[6]};
    expect(nhwcBuild->configurePlugin(nhwc, 6, nhwc + 6, 1) == 0, "configure 4-D NHWC (channels last)");
    expect(nhwcBuild->configurePlugin(io, 6, io + 6, 1) != 0, "NHWC reads channels from dim 3");

    // Build-time workspace covers the launcher's exact need at every batch up to the max.
    size_t const ws = build->getWorkspaceSize(io, 6, io + 6, 1);
    for (int64_t b = 1; b <= 8; ++b)
    {
        LayoverFusedMixArgs a{};
        a.h_dtype = LAYOVER_F16, a.z_dtype = LAYOVER_F16, a.w_dtype = LAYOVER_F32, a.mix = LAYOVER_MIX_RESIDUAL;
        a.B = b, a.C = 768, a.S1 = 1, a.S2 = 112 * 112, a.N = 6144;
        a.h_stride_b = a.C * a.S2, a.h_stride_c = 1, a.h_stride_s2 = a.C;
        expect(layover_fused_mix_workspace_size(&a) <= ws, "workspace bound (channels-last)");
        a.h_stride_c = a.S2, a.h_stride_s2 = 1;
        expect(layover_fused_mix_workspace_size(&a) <= ws, "workspace bound (NCHW)");
    }

    for (IPluginV3* p : {fromOnnx, plugin, restored, cloned})
    {
        delete p;
    }
    if (gFailures == 0)
    {
        std::printf("layover plugin host checks passed\n");
    }
    return gFailures == 0 ? 0 : 1;
}
