// PYCGN_API marks the symbols pycgn's shared libraries export on purpose. The libraries are
// built with hidden visibility by default (CMake: CXX_VISIBILITY_PRESET hidden), so anything
// not marked stays private and cannot clash with, or be interposed by, another library's
// symbols of the same name (libtorch bundles many of the same third-party names).
#pragma once

#if defined(PYCGN_STATIC)
#define PYCGN_API
#elif defined(_WIN32)
#if defined(PYCGN_BUILDING)
#define PYCGN_API __declspec(dllexport)
#else
#define PYCGN_API __declspec(dllimport)
#endif
#else
#define PYCGN_API __attribute__((visibility("default")))
#endif
