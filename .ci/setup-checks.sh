# Sourced by .ci/setup (and by .ci/test-setup, which runs these checks against
# made-up directory trees). Each check asks for the exact file the build loads,
# not for a package with a similar name: a machine image can ship
# `libclang-cpp14` (libclang-cpp.so.14, clang's C++ API) without `libclang1-14`
# (libclang.so.1, the C API bindgen loads), and a check that globbed
# `libclang*.so*` took the first for the second, so libclang-dev was never
# installed and RocksDB's build failed on a fresh machine.
#
# Every function takes ROOT, a directory prepended to every system path it
# looks at ("" for the real machine), so the same code is tested on fixtures.

# The libclang that bindgen's loader (clang-sys, with bindgen's default
# `runtime` feature) would accept: in $LIBCLANG_PATH when that is set, else in
# clang-sys's Linux search directories, a file named libclang.so,
# libclang-*.so, libclang.so.* or libclang-*.so.*, never one whose name holds
# "-cpp." (clang-sys skips libclang-cpp too), that is a 64-bit ELF file (the
# only validation clang-sys does). Prints the path; fails if there is none.
raftkv_find_libclang() {
  local root="${1:-}" dir name file
  local dirs=()
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    dirs=("$root$LIBCLANG_PATH")
  else
    dirs=("$root"/usr/local/llvm*/lib* "$root"/usr/local/lib*/*/* "$root"/usr/local/lib*/*
          "$root"/usr/local/lib* "$root"/usr/lib*/*/* "$root"/usr/lib*/* "$root"/usr/lib*)
  fi
  for dir in "${dirs[@]}"; do
    [ -d "$dir" ] || continue
    for file in "$dir"/libclang.so "$dir"/libclang-*.so "$dir"/libclang.so.* "$dir"/libclang-*.so.*; do
      name="${file##*/}"
      case "$name" in *-cpp.*) continue ;; esac
      [ -f "$file" ] || continue # also drops unmatched globs and dangling links
      # ELF magic, then class 2 (64-bit): what clang-sys checks before loading.
      if [ "$(head -c 5 "$file" | od -An -tx1 | tr -d ' \n')" = "7f454c4602" ]; then
        echo "$file"
        return 0
      fi
    done
  done
  return 1
}

# clang's own headers (stddef.h and friends): libclang parses RocksDB's C
# header with them, and they come from libclang-common-N-dev, which the
# runtime library's package (libclang1-N) does not pull in.
raftkv_find_clang_headers() {
  local root="${1:-}" header
  for header in "$root"/usr/lib/llvm-*/lib/clang/*/include/stddef.h \
                "$root"/usr/local/lib/clang/*/include/stddef.h \
                "$root"/usr/lib/clang/*/include/stddef.h; do
    if [ -f "$header" ]; then
      echo "$header"
      return 0
    fi
  done
  return 1
}

# What RocksDB's bindings need from clang: both of the above.
raftkv_has_libclang() {
  raftkv_find_libclang "${1:-}" >/dev/null && raftkv_find_clang_headers "${1:-}" >/dev/null
}

# protoc, for the etcd-client crate's protos, and the well-known types they
# import (google/protobuf/descriptor.proto), which protoc looks for beside
# itself in ../include: Debian puts them in libprotobuf-dev, only a
# recommendation of protobuf-compiler, so an install without recommends has
# protoc but cannot compile etcd's protos.
raftkv_find_protoc_includes() {
  local root="${1:-}" search="$PATH" protoc
  [ -z "$root" ] || search="$root/usr/local/bin:$root/usr/bin"
  protoc="${PROTOC:-$(PATH="$search" command -v protoc)}" || return 1
  [ -x "$protoc" ] || return 1
  local include="${protoc%/*}/../include/google/protobuf/descriptor.proto"
  [ -f "$include" ] && echo "$include"
}
