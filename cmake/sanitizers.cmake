# BGW_SANITIZE="address;undefined" builds everything (tests included) with those sanitizers.
if(BGW_SANITIZE)
    list(JOIN BGW_SANITIZE "," _bgw_san)
    add_compile_options(-fsanitize=${_bgw_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_link_options(-fsanitize=${_bgw_san})
endif()

# ThreadSanitizer does not model std::atomic_thread_fence, and GCC warns (-Wtsan) wherever a
# header uses one: Asio and Boost.System do. The warning is about what TSan can see, not about
# our code; a race it then misses would show as a report elsewhere, or not at all.
if("thread" IN_LIST BGW_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    add_compile_options(-Wno-tsan)
endif()
