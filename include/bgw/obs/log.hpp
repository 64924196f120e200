#pragma once
/// Logging setup (spdlog). Bodies and secrets are never logged anywhere in the gateway.

#include <string_view>

namespace bgw::obs {

/// Configures the default logger: stdout, the given level ("trace".."off").
/// Returns false for an unknown level name.
bool init_logging(std::string_view level);

}  // namespace bgw::obs
