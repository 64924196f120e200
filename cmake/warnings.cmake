# Warnings are set per target so third-party headers (system includes) stay quiet.
function(bgw_warnings target)
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow)
    if(BGW_WERROR)
        target_compile_options(${target} PRIVATE -Werror)
    endif()
endfunction()
