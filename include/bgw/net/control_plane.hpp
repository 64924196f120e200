#pragma once
/// The read-only control-plane reads (routing/control_plane.hpp) as the gateway answers them:
/// signed for `bedrock` with the gateway's credentials, sent to the region's control endpoint,
/// and served from a short cache, so a fleet of apps starting at once spends the control
/// plane's low request quotas once.

#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/routing/control_plane.hpp"

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace bgw::net {

struct gateway_context;

/// Successful answers by region, path and query, each for `ttl`; thread-safe, bounded.
class control_plane_cache {
public:
    using clock = std::chrono::steady_clock;
    struct answer {
        std::string body;
        std::string content_type;
    };

    explicit control_plane_cache(std::size_t max_entries = 256) : max_entries_(max_entries) {}
    /// The answer stored for `key`, while it is fresh at `now`.
    std::optional<answer> get(const std::string& key, clock::time_point now) const;
    /// Stores `a` until `now + ttl`; a ttl of zero stores nothing. When full, expired entries
    /// go first, then the one that expires soonest.
    void put(const std::string& key, answer a, clock::time_point now, std::chrono::seconds ttl);

private:
    struct entry {
        answer value;
        clock::time_point expires;
    };
    std::size_t max_entries_;
    mutable std::mutex mutex_;
    std::map<std::string, entry> entries_;
};

/// `User-Agent` for an upstream call made for an app: the app's, then the gateway's own, so
/// CloudTrail still shows which app called.
std::string upstream_user_agent(std::string_view app_user_agent);

/// Answers one allowed control-plane read in `region`: from the cache, or upstream (the answer
/// passed through as it came, a throttle turned into the gateway's 429 with Retry-After, no
/// answer a 502/504). `X-Gateway-Cache: hit|miss` says which.
awaitable<beast::http::response<beast::http::string_body>> answer_control_read(
    gateway_context& g,
    const config::config& cfg,
    const routing::control_request& req,
    std::string region,
    std::string app_user_agent,
    std::string request_id);

}  // namespace bgw::net
