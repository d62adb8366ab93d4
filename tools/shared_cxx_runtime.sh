#!/usr/bin/env bash
# Each shared object named must load the shared libstdc++ (libstdc++.so.6 in its DT_NEEDED) and
# define none of the C++ runtime's own symbols: a copy of the runtime of its own, beside torch's,
# is what a g++ that links libstdc++ statically by default leaves (the lent H200's did; pycgn._C
# then crashed at its first error message). Used by tools/cpp_check.sh, tools/gpu_check.sh and
# tests/test_ext_runtime.py. Exit 1 naming each object that breaks the rule.
#
#   tools/shared_cxx_runtime.sh pycgn/_C.so build/cmake/libpycgn_core.so
set -uo pipefail
rc=0
for lib in "$@"; do
  if ! readelf -d "$lib" | grep -q 'NEEDED.*\[libstdc++\.so'; then
    echo "$lib does not load libstdc++.so.6 (links it statically?)"; rc=1
  fi
  own=$(nm -D --defined-only "$lib" | grep -oE ' (__cxa_throw|__gxx_personality_v0)$' | tr -d ' ' | tr '\n' ' ')
  [[ -z $own ]] || { echo "$lib defines the C++ runtime's ${own% }: it carries a copy of its own"; rc=1; }
done
exit $rc
