# BGW_SANITIZE="address;undefined" builds everything (tests included) with those sanitizers.
if(BGW_SANITIZE)
    list(JOIN BGW_SANITIZE "," _bgw_san)
    add_compile_options(-fsanitize=${_bgw_san} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    add_link_options(-fsanitize=${_bgw_san})
endif()
