#pragma once
/// The credentials JSON of credential_process, container endpoints and IMDS
/// (src/aws/credentials/credentials_json.cpp).

#include "bgw/aws/credential_chain.hpp"

#include <string_view>

namespace bgw::aws::cred {

/// Its credentials; with `require_version`, "Version": 1 must be there (credential_process).
result<timed_credentials> credentials_json(std::string_view json, bool require_version);

}  // namespace bgw::aws::cred
