#include "support/fixtures.hpp"

#include <utility>

#include <gtest/gtest.h>

namespace bgw::test {

config::config config_from(std::string_view json) {
    auto c = config::parse_config(json);
    if (!c) {
        ADD_FAILURE() << "config does not parse: " << c.error().message << "\n" << json;
        return {};
    }
    return std::move(*c);
}

}  // namespace bgw::test
