# The CUDA extension: kernels in .cu (no FFI header, fast nvcc), the FFI
# handlers (one <op>_cuda.cc per op family, as the CPU module's <op>_cpu.cc)
# and the nanobind module in .cc (host compiler).
file(GLOB HYPERECA_CUDA_KERNELS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/ffi/src/*_kernels.cu)
nanobind_add_module(_hypereca_cuda NOMINSIZE NB_STATIC
  ffi/src/module_cuda.cc
  ffi/src/find_or_insert_cuda.cc
  ffi/src/find_cuda.cc
  ffi/src/gather_cuda.cc
  ffi/src/apply_gradients_cuda.cc
  ffi/src/erase_cuda.cc
  ffi/src/export_cuda.cc
  ffi/src/import_cuda.cc
  ffi/src/unique_cuda.cc
  ffi/src/bucketize_cuda.cc
  ${HYPERECA_CUDA_KERNELS})
target_include_directories(_hypereca_cuda PRIVATE ffi/include ffi/src)
# SYSTEM: the XLA FFI headers' own warnings are not ours to fix.
target_include_directories(_hypereca_cuda SYSTEM PRIVATE ${XLA_FFI_INCLUDE_DIR})
target_compile_definitions(_hypereca_cuda PRIVATE
  HYPERECA_JAXLIB_VERSION="${HYPERECA_JAXLIB_VERSION}")
target_compile_options(_hypereca_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:${HYPERECA_OPT_FLAGS}>
  $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr -lineinfo --ftz=true>)
target_link_libraries(_hypereca_cuda PRIVATE CUDA::cudart_static)
set_target_properties(_hypereca_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF
                                                CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
install(TARGETS _hypereca_cuda LIBRARY DESTINATION jax_hypereca)
# Float math rounds as on the CPU: denormals flushed to zero everywhere (XLA
# runs CPU handlers with FTZ/DAZ set; division and square root stay IEEE),
# and no a*b+c contraction in the optimizer update (x86-64 has no FMA by
# default).
set_source_files_properties(${CMAKE_SOURCE_DIR}/ffi/src/apply_gradients_kernels.cu
                            PROPERTIES COMPILE_OPTIONS "--fmad=false")
