# Cross-compiling for ARM64 Linux (Jetson, Graviton, Raspberry Pi 4/5) on a Debian x86-64 host.
#
#   apt-get install crossbuild-essential-arm64 qemu-user-static
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install libgtest-dev:arm64 libpcre2-dev:arm64 libutf8proc-dev:arm64 libxsimd-dev:arm64
#   cmake --preset arm64-cross && cmake --build --preset arm64-cross --target test_ops
#   ctest --preset arm64-cross          # runs every test through qemu-aarch64
#
# Libraries come from Debian's multiarch :arm64 packages in /usr/lib/aarch64-linux-gnu;
# CMAKE_LIBRARY_ARCHITECTURE makes find_package and pkg-config look there, not in the
# host's x86-64 folders.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Only the :arm64 pkg-config files (PCRE2, utf8proc) and arch-independent ones.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# xtensor is header-only, but Debian ships it as an arch-specific package whose :arm64 build
# depends on xtl-dev:arm64, which does not exist (xtl-dev is Architecture: all, not
# Multi-Arch: foreign). The host's xtensor package has the same headers; use its config.
if(NOT xtensor_DIR AND EXISTS /usr/lib/x86_64-linux-gnu/cmake/xtensor/xtensorConfig.cmake)
  set(xtensor_DIR /usr/lib/x86_64-linux-gnu/cmake/xtensor CACHE PATH "arch-independent xtensor headers")
endif()

# Test binaries run through qemu-user (also gtest_discover_tests at build time). qemu finds the
# ARM64 dynamic loader under -L; LD_LIBRARY_PATH makes that loader take libc from the same
# folder. Without it the loader finds the :arm64 libc6 package's libc.so.6 through
# /etc/ld.so.cache, a different glibc build than the cross toolchain's ld.so, and the
# mismatch hangs in pthread_create (threads, OpenMP). Other :arm64 libraries (PCRE2,
# utf8proc) still come from /usr/lib/aarch64-linux-gnu through the cache.
find_program(PURELLM_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(PURELLM_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PURELLM_QEMU_AARCH64} -L /usr/aarch64-linux-gnu
      -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib)
endif()
