#pragma once
/// Helpers every file of the credential chain uses (src/aws/credentials/common.cpp). Internal:
/// the chain's API is bgw/aws/credential_chain.hpp.

#include "bgw/aws/credential_chain.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace bgw::aws::cred {

/// 503 ServiceUnavailableException with `message`.
error unavailable(std::string message);
/// `e` with "prefix: " before its message.
error prefixed(std::string_view prefix, error e);
std::string_view trim(std::string_view s);
std::string lower(std::string_view s);
std::optional<std::string> env_var(const provider_io& io, std::string_view name);
/// "bedrock-gateway-<unix seconds>", the RoleSessionName when none is configured.
std::string default_session_name(const provider_io& io);
std::string printable(std::string_view s, std::size_t limit = 300);

}  // namespace bgw::aws::cred
