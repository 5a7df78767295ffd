#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a CMake consumer
# (find_package(derrumbe) -> derrumbe::derrumbe) and a C program built with pkg-config.
set -euo pipefail
build_dir=$1
source_dir=$(cd "$(dirname "$0")" && pwd)
prefix="$build_dir/install-test/prefix"
rm -rf "$build_dir/install-test"
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
torch_lib=$(python3 -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
export LD_LIBRARY_PATH="$prefix/lib:$torch_lib"

cmake -S "$source_dir/consumer" -B "$build_dir/install-test/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$build_dir/install-test/consumer" >/dev/null
"$build_dir/install-test/consumer/consumer"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cat > "$build_dir/install-test/c_consumer.c" <<'C'
#include <derrumbe/derrumbe.h>
#include <stdio.h>
int main(void) {
  printf("C consumer: API %d, %s\n", drb_api_version(), drb_sampler_name(0));
  return drb_api_version() == DRB_API_VERSION ? 0 : 1;
}
C
cc -std=c11 -Wall -Werror "$build_dir/install-test/c_consumer.c" $(pkg-config --cflags --libs derrumbe) \
   -Wl,-rpath-link,"$torch_lib" -o "$build_dir/install-test/c_consumer"
"$build_dir/install-test/c_consumer"
