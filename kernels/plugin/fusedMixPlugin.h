// TensorRT IPluginV3 plugin LayoverFusedMix: the fused Layover branch as one engine layer. Its
// name, version and namespace are compile definitions that the root CMakeLists.txt reads from
// LayoverFusedMix_PluginConfig.yaml (identity.cmake), the file kernels/identity.py reads too.
// Inputs h, z, w_rs, w_sl, b_sl; output z' (shape and type of z). One serialized field, `layout`
// (0 NCHW, 1 NHWC, 2 NLC). enqueue calls the C launcher in kernels/fused_mix.h.
// Written against the public TensorRT 10 headers (also compiles with 11).
#ifndef LAYOVER_FUSED_MIX_PLUGIN_H
#define LAYOVER_FUSED_MIX_PLUGIN_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace layover
{

#if !defined(LAYOVER_PLUGIN_NAME) || !defined(LAYOVER_PLUGIN_VERSION) || !defined(LAYOVER_PLUGIN_NAMESPACE)
#error "build with CMake (or -DLAYOVER_PLUGIN_NAME=... etc.): the identity lives in LayoverFusedMix_PluginConfig.yaml"
#endif
constexpr char const* kPluginName = LAYOVER_PLUGIN_NAME;
constexpr char const* kPluginVersion = LAYOVER_PLUGIN_VERSION;
constexpr char const* kPluginNamespace = LAYOVER_PLUGIN_NAMESPACE;

class FusedMixPlugin final : public nvinfer1::IPluginV3,
                             public nvinfer1::IPluginV3OneCore,
                             public nvinfer1::IPluginV3OneBuild,
                             public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit FusedMixPlugin(int32_t layout);
    FusedMixPlugin(FusedMixPlugin const&) = delete; // mField points into this object
    FusedMixPlugin& operator=(FusedMixPlugin const&) = delete;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(
        int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    int32_t mLayout;
    nvinfer1::PluginField mField;
    nvinfer1::PluginFieldCollection mFields;
};

class FusedMixPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    FusedMixPluginCreator();

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    nvinfer1::PluginField mField;
    nvinfer1::PluginFieldCollection mFields;
};

} // namespace layover

#endif // LAYOVER_FUSED_MIX_PLUGIN_H
