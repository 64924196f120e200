#pragma once
/// Fixtures the unit tests share: what several suites would otherwise each write out.

#include "bgw/config/config.hpp"

#include <string_view>

namespace bgw::test {

/// The config `json` describes. A JSON that does not parse fails the calling test with the
/// parser's message (which names the bad key) and yields the defaults, so the test goes on to
/// fail on its own assertions instead of crashing.
config::config config_from(std::string_view json);

}  // namespace bgw::test
