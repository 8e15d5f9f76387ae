// A link-only stand-in for libnvinfer's plugin registry, for tests/test_kernel_build.py: TensorRT's
// libraries cannot be installed here. It exports getPluginRegistry() and records every
// registerCreator call (name, version, the namespace passed, the creator's own namespace); every
// other registry method prints its name and aborts, so a library that needed more of TensorRT would
// fail the test rather than pass it. It says nothing about what TensorRT does with a creator, only
// which creators a library hands the registry, and when.
//
//   nvcc -shared -Xcompiler -fPIC -std=c++17 -I<TensorRT include> -Xlinker=-soname,libnvinfer.so.<major> \
//        -o libnvinfer.so plugin_registry_stub.cpp
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

[[noreturn]] void unexpected(char const* what)
{
    std::fprintf(stderr, "registry stub: unexpected call to %s\n", what);
    std::abort();
}

std::vector<std::string> gRegistered;

class RecordingRegistry final : public IPluginRegistry
{
public:
#if NV_TENSORRT_MAJOR < 11
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override
    {
        unexpected("registerCreator(IPluginCreator&)");
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const) const noexcept override
    {
        unexpected("getPluginCreatorList");
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        unexpected("getPluginCreator");
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override
    {
        unexpected("deregisterCreator(IPluginCreator const&)");
    }
#endif
    void setErrorRecorder(IErrorRecorder* const) noexcept override
    {
        unexpected("setErrorRecorder");
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        unexpected("getErrorRecorder");
    }
    bool isParentSearchEnabled() const override
    {
        unexpected("isParentSearchEnabled");
    }
    void setParentSearchEnabled(bool const) override
    {
        unexpected("setParentSearchEnabled");
    }
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override
    {
        unexpected("loadLibrary");
    }
    void deregisterLibrary(PluginLibraryHandle) noexcept override
    {
        unexpected("deregisterLibrary");
    }
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const pluginNamespace) noexcept override
    {
        std::string entry = creator.getInterfaceInfo().kind;
        if (entry == "PLUGIN CREATOR_V3ONE")
        {
            auto& v3 = static_cast<IPluginCreatorV3One&>(creator);
            entry += std::string(" ") + v3.getPluginName() + " " + v3.getPluginVersion() + " "
                + v3.getPluginNamespace();
        }
        gRegistered.push_back(entry + " namespace=" + (pluginNamespace ? pluginNamespace : "(null)"));
        return true;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const) const noexcept override
    {
        unexpected("getAllCreators");
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept override
    {
        unexpected("getCreator");
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override
    {
        unexpected("deregisterCreator");
    }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override
    {
        unexpected("acquirePluginResource");
    }
    int32_t releasePluginResource(AsciiChar const*) noexcept override
    {
        unexpected("releasePluginResource");
    }
#if NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 10)
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const) noexcept override
    {
        unexpected("getAllCreatorsRecursive");
    }
#endif
};

} // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    static RecordingRegistry registry;
    return &registry;
}

// How many creators were registered; copies the i-th record ("<kind> <name> <version> <namespace>
// namespace=<argument>") into buf.
extern "C" __attribute__((visibility("default"))) int stub_registered(int i, char* buf, int size)
{
    if (i >= 0 && i < static_cast<int>(gRegistered.size()) && size > 0)
    {
        std::snprintf(buf, static_cast<size_t>(size), "%s", gRegistered[static_cast<size_t>(i)].c_str());
    }
    return static_cast<int>(gRegistered.size());
}
