#pragma once
/// Where the gateway's own AWS credentials come from (issue 7): the AWS SDKs' provider chain,
/// each provider a small pure function. Everything a provider needs from the outside world
/// (environment, files, HTTP, running credential_process, the clock) comes in through
/// provider_io, so the providers are tested without sockets or processes; the I/O shell
/// (net/credential_source) supplies the real ones and refreshes in the background.

#include "bgw/aws/sigv4.hpp"
#include "bgw/aws/static_credentials.hpp"
#include "bgw/error.hpp"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::aws {

/// Credentials and when they stop working.
struct timed_credentials {
    credentials creds;
    std::optional<std::chrono::sys_seconds> expiration;  ///< nullopt: long-term keys
    std::string source;  ///< "environment", "web-identity", "profile dev", "container", "imds"...
};

/// One HTTP(S) exchange a provider asks for. The shell bounds it (connect and read timeouts,
/// body size) and verifies TLS.
struct fetch_request {
    std::string method;  ///< "GET", "PUT", "POST"
    std::string url;     ///< absolute http:// or https:// URL
    std::vector<header> headers;
    std::string body;
};
struct fetch_response {
    unsigned status = 0;
    std::string body;
};

struct provider_io {
    env_lookup env;
    /// The contents of a file, or nullopt when it cannot be read.
    std::function<std::optional<std::string>(const std::string& path)> read_file;
    /// Makes one exchange; an error when there was no HTTP answer at all.
    std::function<result<fetch_response>(const fetch_request&)> fetch;
    /// Runs a credential_process command line; its standard output, or an error (non-zero exit,
    /// timeout, too much output).
    std::function<result<std::string>(const std::string& command)> run;
    std::function<std::chrono::sys_seconds()> now;
};

/// What one provider found: nullopt when its source is not configured at all (the chain moves
/// on), an error when it is configured but failed (the chain stops and says why, as the SDKs
/// do), else the credentials.
using provider_result = std::optional<result<timed_credentials>>;

/// 1. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
provider_result from_environment(const provider_io& io);

/// 2. AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN [+ AWS_ROLE_SESSION_NAME]: STS
///    AssumeRoleWithWebIdentity (unsigned), the token file read afresh on each call.
provider_result from_web_identity(const provider_io& io, std::string_view region);

/// 3. The shared config and credentials files (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE,
///    default ~/.aws/config and ~/.aws/credentials) for `profile` (empty: AWS_PROFILE, else
///    "default"): static keys, credential_process (its JSON contract, Version 1), or role_arn +
///    source_profile (STS AssumeRole signed with the source profile's credentials; chains of
///    source profiles are followed, a loop is an error).
provider_result from_profile(const provider_io& io,
                             std::string_view region,
                             std::string_view profile);

/// 4. AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (on http://169.254.170.2) or
///    AWS_CONTAINER_CREDENTIALS_FULL_URI (only loopback, 169.254.170.2 or 169.254.170.23 hosts),
///    with AWS_CONTAINER_AUTHORIZATION_TOKEN or the token in
///    AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE.
provider_result from_container(const provider_io& io);

/// 5. EC2 IMDSv2: PUT /latest/api/token, then the role name and its credentials, every GET with
///    the token. AWS_EC2_METADATA_SERVICE_ENDPOINT overrides http://169.254.169.254;
///    AWS_EC2_METADATA_DISABLED=true turns it off.
provider_result from_imds(const provider_io& io);

/// The chain in the SDKs' order (environment, web identity, profile, container, IMDS), or the
/// one `pinned` source ("environment", "web-identity", "profile", "container", "imds"; with
/// `profile` for "profile"). An error says which source failed and why, or that none is set.
result<timed_credentials> resolve_credentials(const provider_io& io,
                                              std::string_view region,
                                              std::string_view pinned = {},
                                              std::string_view profile = {});

// The pieces, exposed for tests.

/// True for the hosts AWS_CONTAINER_CREDENTIALS_FULL_URI may name: loopback (127.0.0.0/8, ::1,
/// localhost), 169.254.170.2 and 169.254.170.23 (and [fd00:ec2::23]).
bool container_host_allowed(std::string_view url);

/// The STS endpoint for `region`: AWS_ENDPOINT_URL_STS when set, else
/// https://sts.{region}.amazonaws.com.
std::string sts_endpoint(const env_lookup& env, std::string_view region);

/// `<Credentials>` of an AssumeRole / AssumeRoleWithWebIdentity response (XML), or the STS error
/// (`<Error><Code>`, `<Message>`).
result<timed_credentials> parse_sts_response(unsigned status, std::string_view xml);

/// The JSON of credential_process, ECS/EKS container endpoints and IMDS (AccessKeyId,
/// SecretAccessKey, Token or SessionToken, Expiration in ISO 8601).
result<timed_credentials> parse_credentials_json(std::string_view json);

/// "2026-11-23T13:00:00Z" (fractions and offsets allowed) as a time point.
std::optional<std::chrono::sys_seconds> parse_iso8601(std::string_view s);

/// The access key id as logs may show it: its last four characters only.
std::string redacted_key_id(std::string_view access_key_id);

}  // namespace bgw::aws
