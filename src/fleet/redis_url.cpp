#include "bgw/fleet/redis_url.hpp"

#include <charconv>

#include <boost/url/grammar/ci_string.hpp>
#include <boost/url/parse.hpp>

namespace bgw::fleet {

namespace {

/// The db number from the URL's path: "" or "/" is 0, "/<n>" is n (0-65535).
result<int> parse_db(std::string_view path) {
    if (path.empty() || path == "/") return 0;
    std::string_view digits = path.substr(1);
    unsigned value = 0;
    const char* end = digits.data() + digits.size();
    auto [p, ec] = std::from_chars(digits.data(), end, value);
    if (ec != std::errc{} || p != end || value > 65535 || digits.front() == '+') {
        return validation_error("the path must be /<db>, a database number from 0 to 65535");
    }
    return static_cast<int>(value);
}

}  // namespace

result<redis_url> parse_redis_url(std::string_view url) {
    // None of the messages below quote the URL: it may hold a password by mistake.
    auto u = boost::urls::parse_absolute_uri(url);
    if (!u) return validation_error("not a URL of the form redis://[username@]host[:port][/db]");
    redis_url out;
    // Schemes are case-insensitive (RFC 3986 section 3.1).
    using boost::urls::grammar::ci_is_equal;
    if (ci_is_equal(u->scheme(), "rediss")) {
        out.tls = true;
    } else if (!ci_is_equal(u->scheme(), "redis")) {
        return validation_error("the scheme must be redis:// or rediss://");
    }
    if (u->has_password()) {
        return validation_error("a password in the URL is refused: put it in password_file");
    }
    if (u->has_query() || u->has_fragment()) {
        return validation_error(
            "a query or fragment is not supported: use [username@]host[:port][/db]");
    }
    if (u->has_userinfo()) out.username = u->user();

    switch (u->host_type()) {
        case boost::urls::host_type::name:
        case boost::urls::host_type::ipv4:
        case boost::urls::host_type::ipv6:
            // Decoded, and an IPv6 literal without its brackets: what a resolver takes.
            out.host = u->host_address();
            break;
        default:
            return validation_error("the host must be a name or an IPv4/IPv6 address");
    }
    if (out.host.empty()) return validation_error("the URL has no host");

    if (u->has_port()) {
        // port_number() is 0 for an empty port and for one past 65535.
        if (u->port_number() == 0) return validation_error("the port must be 1-65535");
        out.port = u->port_number();
    }
    auto db = parse_db(u->encoded_path());
    if (!db) return db.error();
    out.db = *db;
    return out;
}

}  // namespace bgw::fleet
