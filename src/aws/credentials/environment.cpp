// 1. Environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and
// AWS_CREDENTIAL_EXPIRATION.

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/providers.hpp"

#include <utility>

namespace bgw::aws::cred {

provider_result environment_provider(const provider_io& io, std::string& missing) {
    auto c = credentials_from_env(io.env);
    if (!c) {
        missing = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set";
        return std::nullopt;
    }
    timed_credentials out{std::move(*c), std::nullopt, "environment"};
    // AWS_CREDENTIAL_EXPIRATION: botocore's way to say the variables hold temporary keys.
    if (auto exp = env_var(io, "AWS_CREDENTIAL_EXPIRATION")) {
        out.expiration = parse_iso8601(*exp);
        if (!out.expiration) {
            return result<timed_credentials>(
                unavailable("environment: AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time"));
        }
    }
    return result<timed_credentials>(std::move(out));
}

}  // namespace bgw::aws::cred
