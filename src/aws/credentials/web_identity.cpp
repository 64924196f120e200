// 2. Web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN, exchanged with STS.

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/providers.hpp"
#include "bgw/aws/credentials/sts.hpp"

namespace bgw::aws::cred {

provider_result web_identity_provider(const provider_io& io,
                                      std::string_view region,
                                      std::string& missing) {
    auto token_file = env_var(io, "AWS_WEB_IDENTITY_TOKEN_FILE");
    auto role_arn = env_var(io, "AWS_ROLE_ARN");
    if (!token_file || !role_arn) {
        missing = "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not both set";
        return std::nullopt;
    }
    auto session = env_var(io, "AWS_ROLE_SESSION_NAME").value_or(default_session_name(io));
    auto got = web_identity_call(io, region, *token_file, *role_arn, session, "web-identity");
    if (!got) return result<timed_credentials>(prefixed("web identity", got.error()));
    return got;
}

}  // namespace bgw::aws::cred
