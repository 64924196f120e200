// 4. Container: the ECS task role endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI) and EKS Pod
// Identity / Greengrass (AWS_CONTAINER_CREDENTIALS_FULL_URI), with their authorization token.

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/providers.hpp"

#include <boost/url/parse.hpp>

namespace bgw::aws::cred {

provider_result container_provider(const provider_io& io, std::string& missing) {
    fetch_request req;
    req.method = "GET";
    // RELATIVE_URI wins (ECS sets it; FULL_URI is EKS Pod Identity and Greengrass).
    if (auto rel = env_var(io, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")) {
        req.url = "http://169.254.170.2" + (rel->starts_with("/") ? *rel : "/" + *rel);
    } else if (auto full = env_var(io, "AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
        if (!container_host_allowed(*full)) {
            auto url = boost::urls::parse_uri(*full);
            const std::string host = url ? std::string(url->encoded_host()) : "(not a URL)";
            return result<timed_credentials>(unavailable(
                "container: AWS_CONTAINER_CREDENTIALS_FULL_URI names host " + printable(host, 100) +
                ", but only loopback (127.0.0.0/8, ::1, localhost), 169.254.170.2, "
                "169.254.170.23 and fd00:ec2::23 are allowed over http or https"));
        }
        req.url = *full;
    } else {
        missing =
            "neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor "
            "AWS_CONTAINER_CREDENTIALS_FULL_URI is set";
        return std::nullopt;
    }
    // The token file is read on every call: EKS Pod Identity rotates it.
    std::optional<std::string> token;
    if (auto file = env_var(io, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")) {
        auto text = io.read_file(*file);
        if (!text) {
            return result<timed_credentials>(unavailable(
                "container: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE " + *file));
        }
        token = std::string(trim(*text));
    } else if (auto value = env_var(io, "AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
        token = *value;
    }
    if (token) {
        // Checked like botocore: a CR or LF would split the request into two.
        if (token->find_first_of("\r\n") != std::string::npos) {
            return result<timed_credentials>(
                unavailable("container: the authorization token is not a legal header value"));
        }
        req.headers.push_back({"Authorization", *token});
    }
    req.headers.push_back({"Accept", "application/json"});
    auto resp = io.fetch(req);
    if (!resp) {
        return result<timed_credentials>(unavailable(
            "container: no answer from the credentials endpoint: " + resp.error().message));
    }
    if (resp->status != 200) {
        return result<timed_credentials>(unavailable(
            "container: the credentials endpoint answered HTTP " + std::to_string(resp->status)));
    }
    auto got = parse_credentials_json(resp->body);
    if (!got) return result<timed_credentials>(prefixed("container", got.error()));
    got->source = "container";
    return got;
}

}  // namespace bgw::aws::cred

namespace bgw::aws {

bool container_host_allowed(std::string_view url) {
    auto u = boost::urls::parse_uri(url);
    if (!u || (u->scheme() != "http" && u->scheme() != "https") || !u->has_authority())
        return false;
    switch (u->host_type()) {
        case boost::urls::host_type::ipv4: {
            const auto a = u->host_ipv4_address().to_uint();
            return (a >> 24) == 127 || a == 0xA9FEAA02u /* 169.254.170.2 */ ||
                   a == 0xA9FEAA17u /* 169.254.170.23 */;
        }
        case boost::urls::host_type::ipv6: {
            const auto a = u->host_ipv6_address();
            if (a.is_loopback()) return true;
            const auto b = a.to_bytes();
            // ::ffff:127.x.y.z is loopback too.
            if (a.is_v4_mapped()) return b[12] == 127;
            // fd00:ec2::23, the EKS Pod Identity agent over IPv6.
            constexpr boost::urls::ipv6_address::bytes_type eks = {
                0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x23};
            return b == eks;
        }
        case boost::urls::host_type::name:
            // No DNS here (pure code): only the literal name, as localhost always is loopback.
            return cred::lower(u->encoded_host()) == "localhost";
        default:
            return false;
    }
}

}  // namespace bgw::aws
