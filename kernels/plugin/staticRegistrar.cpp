// liblayover_plugins_static.so: registers the LayoverFusedMix creator, under the plugin's namespace,
// while the library is being loaded, for loaders that only dlopen it: LD_PRELOAD, Triton's tensorrt
// backend (`--backend-config=tensorrt,plugins=...` calls dlopen(path, RTLD_NOW | RTLD_LOCAL) and
// nothing else: tensorrt_backend src/tensorrt.cc and src/shared_library.cc) and
// `trtexec --staticPlugins`.
//
// Not REGISTER_TENSORRT_PLUGIN: its PluginRegistrar calls registerCreator(instance, "")
// (NvInferRuntime.h, release/10.3 l.4657-4668, the same in 11.1), and an engine looks its plugin
// up by name, version and the namespace recorded at build time ("layover"), which "" is not.
// Not in the same library as getCreators: IPluginRegistry::loadLibrary "will fail and return
// nullptr if any of the plugins are already registered" (NvInferRuntimeCommon.h, release/10.3
// l.200-208), which a library that registers itself on load always would be.
//
// Linked against libnvinfer (getPluginRegistry lives there): under RTLD_LOCAL the library must
// resolve the symbol through its own dependency on the libnvinfer the loader already holds.
#include "fusedMixPlugin.h"

namespace
{

struct Registrar
{
    Registrar()
    {
        static layover::FusedMixPluginCreator creator;
        // false: a creator of this name, version and namespace is already registered (the library
        // loaded twice, or with its loadLibrary twin); that one serves the same engines.
        getPluginRegistry()->registerCreator(creator, layover::kPluginNamespace);
    }
};

Registrar const gRegistrar;

} // namespace
