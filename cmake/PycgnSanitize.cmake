# PYCGN_SANITIZE=ON: AddressSanitizer + UndefinedBehaviorSanitizer on every host C++ target
# (nvcc-compiled device code is not instrumented); any UB report fails the run.
if(PYCGN_SANITIZE)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "PYCGN_SANITIZE needs GCC or Clang, not ${CMAKE_CXX_COMPILER_ID}")
  endif()
  set(_pycgn_san -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_pycgn_san}>")
  add_compile_options("$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-fsanitize=address,-fsanitize=undefined,-fno-omit-frame-pointer>")
  add_link_options(-fsanitize=address,undefined)
endif()
