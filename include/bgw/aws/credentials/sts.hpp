#pragma once
/// The two STS calls the providers make (src/aws/credentials/sts.cpp).

#include "bgw/aws/credential_chain.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace bgw::aws::cred {

/// STS AssumeRoleWithWebIdentity with the token in `token_file`; `source` names the result.
result<timed_credentials> web_identity_call(const provider_io& io,
                                            std::string_view region,
                                            const std::string& token_file,
                                            const std::string& role_arn,
                                            const std::string& session_name,
                                            std::string source);

struct assume_role_params {
    std::string role_arn;
    std::string session_name;
    std::optional<std::string> external_id;
    std::optional<std::string> duration_seconds;
};

/// STS AssumeRole signed with `source_creds`; `source` names the result.
result<timed_credentials> assume_role_call(const provider_io& io,
                                           std::string_view region,
                                           const credentials& source_creds,
                                           const assume_role_params& p,
                                           std::string source);

}  // namespace bgw::aws::cred
