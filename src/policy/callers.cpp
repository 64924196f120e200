#include "bgw/policy/callers.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace bgw::policy {
namespace {

namespace http = boost::beast::http;

error unauthorized(std::string message) {
    return {http::status::unauthorized, "UnrecognizedClientException", std::move(message)};
}

bool istarts_with(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
        if (lower(s[i]) != lower(prefix[i])) return false;
    }
    return true;
}

}  // namespace

result<caller> authenticate(const config::config& cfg,
                            std::string_view x_api_key,
                            std::string_view authorization) {
    if (cfg.caller_keys.empty()) return caller{};
    std::string_view presented = x_api_key;
    if (presented.empty() && istarts_with(authorization, "Bearer ")) {
        presented = authorization.substr(7);
        while (!presented.empty() && presented.front() == ' ') presented.remove_prefix(1);
    }
    if (presented.empty()) {
        return unauthorized(
            "this gateway needs a caller key: send it as x-api-key or Authorization: Bearer "
            "(an AWS signature is not one)");
    }
    std::array<unsigned char, 32> digest{};
    SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(),
           digest.data());
    std::optional<caller> match;
    for (const auto& [name, key] : cfg.caller_keys) {
        // No early exit: every hash is compared the same way.
        if (CRYPTO_memcmp(digest.data(), key.sha256.data(), digest.size()) == 0)
            match = caller{name, &key};
    }
    if (!match) return unauthorized("the caller key is not one this gateway knows");
    return *match;
}

result<void> authorize_model(const caller& c, std::string_view model) {
    if (!c.key || c.key->models.empty()) return {};
    if (!model.empty() &&
        std::find(c.key->models.begin(), c.key->models.end(), model) != c.key->models.end())
        return {};
    return error{http::status::forbidden, "AccessDeniedException",
                 "caller key " + std::string(c.name) + " may not call " +
                     (model.empty() ? std::string("operations that name no model")
                                    : "model " + std::string(model))};
}

bool region_allowed(const caller& c, std::string_view region) {
    if (!c.key || c.key->regions.empty()) return true;
    return std::find(c.key->regions.begin(), c.key->regions.end(), region) != c.key->regions.end();
}

}  // namespace bgw::policy
