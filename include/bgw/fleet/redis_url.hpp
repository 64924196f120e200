#pragma once
/// The `shared_state.redis.url` setting: `redis://[username@]host[:port][/db]`, or `rediss://`
/// for TLS. A password never travels in the URL (it would end up in config dumps, process
/// listings and logs): it comes from `password_file`.
/// Spec: https://www.iana.org/assignments/uri-schemes/prov/redis (and .../rediss).

#include "bgw/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace bgw::fleet {

/// Where a gateway finds its Redis, as the URL names it.
struct redis_url {
    bool tls = false;  ///< rediss://
    std::string host;  ///< a name or an IP literal (IPv6 without its brackets)
    std::uint16_t port = 6379;
    int db = 0;            ///< SELECTed after AUTH when not 0
    std::string username;  ///< ACL user (Redis 6+); empty: AUTH with the password alone
};

/// Parses a Redis URL. Errors (ValidationException) say what is wrong and never repeat the
/// URL, so a password typed into it by mistake is never echoed: a scheme other than redis or
/// rediss, a password ("put it in password_file"), no host, port 0 or out of range, a path
/// other than /<db> with db 0-65535, a query or fragment.
result<redis_url> parse_redis_url(std::string_view url);

}  // namespace bgw::fleet
