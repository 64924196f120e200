# Warnings are set per target so third-party headers (system includes) stay quiet.
# -Wconversion (the style guide's list) flags implicit narrowing: a size into an int, a double into
# an integer, a 64-bit count into 32 bits. -Wsign-conversion is not asked for: g++ leaves it out of
# -Wconversion in C++, clang puts it in, so clang turns it back off.
function(bgw_warnings target)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
    # The same meaning under both compilers (the fuzz build and clang-tidy use clang).
    if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
        target_compile_options(${target} PRIVATE -Wno-sign-conversion)
    endif()
    # GCC 12 takes asio's coroutine frames, allocated and freed by awaitable_frame_base's own
    # operator new and delete, for a mismatched pair (a false positive GCC 13 no longer reports);
    # it comes and goes with inlining, file by file and build type by build type.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
        target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
    endif()
    # clang (not g++) warns on RapidJSON's member iterators compared under C++20 rules: the
    # operators are RapidJSON's, only the comparison is ours.
    if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
        target_compile_options(${target} PRIVATE -Wno-ambiguous-reversed-operator)
    endif()
    if(BGW_WERROR)
        target_compile_options(${target} PRIVATE -Werror)
    endif()
endfunction()
