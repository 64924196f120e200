// 5. EC2 instance metadata (IMDSv2 only): the instance profile's role credentials.

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/providers.hpp"

#include <vector>

namespace bgw::aws::cred {

provider_result imds_provider(const provider_io& io, std::string& missing) {
    if (auto off = env_var(io, "AWS_EC2_METADATA_DISABLED"); off && lower(*off) == "true") {
        missing = "AWS_EC2_METADATA_DISABLED is true";
        return std::nullopt;
    }
    std::string endpoint = "http://169.254.169.254";
    if (auto ep = env_var(io, "AWS_EC2_METADATA_SERVICE_ENDPOINT")) {
        endpoint = *ep;
    } else if (auto mode = env_var(io, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
               mode && lower(*mode) == "ipv6") {
        endpoint = "http://[fd00:ec2::254]";
    }
    while (endpoint.ends_with('/')) endpoint.pop_back();

    // IMDSv2 only: no fallback to v1 (no token), which any SSRF could reach.
    auto token = io.fetch({"PUT",
                           endpoint + "/latest/api/token",
                           {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}},
                           ""});
    if (!token) {
        // Nobody answered: not on EC2. Not an error, there is just nothing here.
        missing = "no answer from IMDS at " + endpoint + " (" + token.error().message + ")";
        return std::nullopt;
    }
    if (token->status != 200) {
        return result<timed_credentials>(unavailable("imds: PUT /latest/api/token answered HTTP " +
                                                     std::to_string(token->status)));
    }
    const std::string session(trim(token->body));
    if (session.empty())
        return result<timed_credentials>(unavailable("imds: the IMDSv2 token is empty"));
    const std::string base = endpoint + "/latest/meta-data/iam/security-credentials/";
    const std::vector<header> with_token = {{"X-aws-ec2-metadata-token", session}};

    auto roles = io.fetch({"GET", base, with_token, ""});
    if (!roles) {
        return result<timed_credentials>(
            unavailable("imds: no answer for the IAM role name: " + roles.error().message));
    }
    // An instance without an instance profile: botocore finds no credentials and moves on.
    if (roles->status == 404) {
        missing = "no IAM role is attached to this EC2 instance";
        return std::nullopt;
    }
    if (roles->status != 200) {
        return result<timed_credentials>(unavailable("imds: GET " + base.substr(endpoint.size()) +
                                                     " answered HTTP " +
                                                     std::to_string(roles->status)));
    }
    const std::string role(trim(std::string_view(roles->body).substr(0, roles->body.find('\n'))));
    if (role.empty()) {
        missing = "no IAM role is attached to this EC2 instance";
        return std::nullopt;
    }
    auto creds = io.fetch({"GET", base + role, with_token, ""});
    if (!creds) {
        return result<timed_credentials>(
            unavailable("imds: no answer for the credentials of role " + printable(role, 64) +
                        ": " + creds.error().message));
    }
    if (creds->status != 200) {
        return result<timed_credentials>(unavailable("imds: the credentials of role " +
                                                     printable(role, 64) + " answered HTTP " +
                                                     std::to_string(creds->status)));
    }
    auto got = parse_credentials_json(creds->body);
    if (!got)
        return result<timed_credentials>(
            prefixed("imds: role " + printable(role, 64), got.error()));
    got->source = "imds";
    return got;
}

}  // namespace bgw::aws::cred
