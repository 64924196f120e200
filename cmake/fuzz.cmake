# BGW_FUZZ=ON configures the libFuzzer build (tests/fuzz): bgw_core and the fuzz targets only,
# every TU instrumented for coverage (fuzzer-no-link) and checked by ASan + UBSan, so the fuzzer
# sees into the code under test and any undefined behaviour aborts (no recovery).
# scripts/fuzz.sh configures it with clang into build-fuzz/:
#
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -DBGW_FUZZ=ON && cmake --build build-fuzz -j2
if(BGW_FUZZ)
    if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
        message(FATAL_ERROR "BGW_FUZZ=ON needs clang (libFuzzer is part of it), found "
                            "${CMAKE_CXX_COMPILER_ID}: configure a fresh build directory with "
                            "CC=clang CXX=clang++")
    endif()
    if(BGW_SANITIZE)
        message(FATAL_ERROR "BGW_FUZZ=ON sets its own sanitizers (address, undefined): "
                            "leave BGW_SANITIZE empty")
    endif()
    set(_bgw_fuzz_san "address,undefined")
    # ubsan.ignore exempts one known RapidJSON 1.1.0 defect (see the file); nothing of ours.
    add_compile_options(-fsanitize=fuzzer-no-link,${_bgw_fuzz_san} -fno-sanitize-recover=all
                        -fsanitize-ignorelist=${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/ubsan.ignore
                        -fno-omit-frame-pointer -gline-tables-only)
    add_link_options(-fsanitize=${_bgw_fuzz_san})
endif()
