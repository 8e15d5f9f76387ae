// liblayover_plugins.so's entry points: what IPluginRegistry::loadLibrary and
// `trtexec --dynamicPlugins` look up in the library they open, and register with the namespace the
// creator reports. The library registers nothing by being loaded, so a plain dlopen (LD_PRELOAD,
// Triton's tensorrt backend `plugins` option) leaves the registry without the plugin: those loaders
// take liblayover_plugins_static.so (staticRegistrar.cpp) instead.
#include "fusedMixPlugin.h"

using namespace nvinfer1;

// The headers' TENSORRTAPI exports only inside TensorRT's own build, so spell visibility out.
#define LAYOVER_PLUGIN_API __attribute__((visibility("default")))

extern "C" LAYOVER_PLUGIN_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static layover::FusedMixPluginCreator creator;
    static IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}

// The plugin logs nothing, so it has no use for the logger finder; the symbol must exist.
extern "C" LAYOVER_PLUGIN_API void setLoggerFinder(ILoggerFinder* /*finder*/) {}
