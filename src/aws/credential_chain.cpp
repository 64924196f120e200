// The AWS SDKs' credential provider chain as pure functions over provider_io. Behaviour follows
// botocore (credentials.py, configloader.py) where the SDKs agree; deviations are commented.
// Every error message names the source and the reason, and never a secret: no secret key,
// session token, web identity token, authorization token, process output or response body
// (STS's own <Code>/<Message> excepted: they are AWS's text and carry no credentials).
//
// This file is the chain itself: the providers' entry points and the order they run in. Each
// provider is in src/aws/credentials/ (README.md there gives the order and which file holds
// which).

#include "bgw/aws/credential_chain.hpp"

#include "bgw/aws/credentials/common.hpp"
#include "bgw/aws/credentials/providers.hpp"

#include <optional>
#include <string>
#include <utility>

namespace bgw::aws {

using cred::container_provider;
using cred::environment_provider;
using cred::imds_provider;
using cred::profile_provider;
using cred::unavailable;
using cred::web_identity_provider;

provider_result from_environment(const provider_io& io) {
    std::string missing;
    return environment_provider(io, missing);
}

provider_result from_web_identity(const provider_io& io, std::string_view region) {
    std::string missing;
    return web_identity_provider(io, region, missing);
}

provider_result from_profile(const provider_io& io,
                             std::string_view region,
                             std::string_view profile) {
    std::string missing;
    return profile_provider(io, region, profile, missing);
}

provider_result from_container(const provider_io& io) {
    std::string missing;
    return container_provider(io, missing);
}

provider_result from_imds(const provider_io& io) {
    std::string missing;
    return imds_provider(io, missing);
}

result<timed_credentials> resolve_credentials(const provider_io& io,
                                              std::string_view region,
                                              std::string_view pinned,
                                              std::string_view profile) {
    std::string missing;
    auto run = [&](std::string_view source) -> std::optional<provider_result> {
        if (source == "environment") return environment_provider(io, missing);
        if (source == "web-identity") return web_identity_provider(io, region, missing);
        if (source == "profile") return profile_provider(io, region, profile, missing);
        if (source == "container") return container_provider(io, missing);
        if (source == "imds") return imds_provider(io, missing);
        return std::nullopt;
    };
    if (!pinned.empty()) {
        auto got = run(pinned);
        if (!got) return unavailable("unknown credentials.source " + std::string(pinned));
        if (!*got) {
            return unavailable("credentials.source " + std::string(pinned) +
                               " is not configured: " + missing);
        }
        return std::move(**got);
    }
    // The first source that is configured decides, even when it fails: falling through to the
    // next would quietly sign with credentials nobody meant the gateway to use.
    for (auto source : {"environment", "web-identity", "profile", "container", "imds"}) {
        if (auto got = *run(source)) return std::move(*got);
    }
    const std::string name = !profile.empty() ? std::string(profile) : profile_name(io.env);
    return unavailable("no AWS credentials found: tried environment, web identity, profile " +
                       name + ", container, IMDS");
}

}  // namespace bgw::aws
