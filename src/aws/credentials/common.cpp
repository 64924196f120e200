// Helpers shared by the credential providers: errors, trimming, the environment, safe log text.

#include "bgw/aws/credentials/common.hpp"

#include <cctype>
#include <utility>

namespace bgw::aws::cred {

error unavailable(std::string message) {
    return {boost::beast::http::status::service_unavailable, "ServiceUnavailableException",
            std::move(message)};
}

error prefixed(std::string_view prefix, error e) {
    e.message = std::string(prefix) + ": " + e.message;
    return e;
}

std::string_view trim(std::string_view s) {
    auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && ws(s.front())) s.remove_prefix(1);
    while (!s.empty() && ws(s.back())) s.remove_suffix(1);
    return s;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

/// A set, non-empty environment variable (the SDKs treat an empty one as unset).
std::optional<std::string> env_var(const provider_io& io, std::string_view name) {
    auto v = io.env(name);
    if (!v || v->empty()) return std::nullopt;
    return v;
}

std::string default_session_name(const provider_io& io) {
    return "bedrock-gateway-" + std::to_string(io.now().time_since_epoch().count());
}

/// Text that came from a remote party, made safe for one log line: no control characters and
/// bounded, so a hostile endpoint cannot forge log lines or flood them.
std::string printable(std::string_view s, std::size_t limit) {
    std::string out;
    for (char c : s.substr(0, limit)) out += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
    if (s.size() > limit) out += "...";
    return out;
}

}  // namespace bgw::aws::cred

namespace bgw::aws {

std::string redacted_key_id(std::string_view access_key_id) {
    // Short ids are not real ones; showing four characters of them would show most of them.
    if (access_key_id.size() < 8) return "****";
    return "****" + std::string(access_key_id.substr(access_key_id.size() - 4));
}

}  // namespace bgw::aws
