# The TensorRT plugin's identity (name, version, namespace), read from its schema
# LayoverFusedMix_PluginConfig.yaml: the one place they are written. kernels/identity.py reads the
# same file with the same three patterns (its PATTERNS); tests/test_kernel_identity.py runs this
# function through `cmake -P` and compares.
#
#   layover_plugin_identity(<schema.yaml> <name var> <version var> <namespace var>)
function(layover_plugin_identity schema out_name out_version out_namespace)
  file(READ "${schema}" text)
  set(text "\n${text}")
  foreach(key name namespace version)
    if(key STREQUAL "version")
      set(pattern "\nversions:[ ]*\n[ ]+\"?([A-Za-z0-9_.]+)\"?:")
    else()
      set(pattern "\n${key}:[ ]*\"?([A-Za-z0-9_.]+)")
    endif()
    string(REGEX MATCH "${pattern}" matched "${text}")
    if(matched STREQUAL "")
      message(FATAL_ERROR "${schema}: no top-level '${key}'")
    endif()
    set(value_${key} "${CMAKE_MATCH_1}")
  endforeach()
  set(${out_name} "${value_name}" PARENT_SCOPE)
  set(${out_version} "${value_version}" PARENT_SCOPE)
  set(${out_namespace} "${value_namespace}" PARENT_SCOPE)
endfunction()
