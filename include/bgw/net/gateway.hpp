#pragma once
/// The gateway's shared state and its entry points for the I/O shell.

#include "bgw/aws/signing_key_cache.hpp"
#include "bgw/aws/sigv4.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/batch_service.hpp"
#include "bgw/net/credential_source.hpp"
#include "bgw/net/upstream.hpp"
#include "bgw/policy/traffic.hpp"

#include <atomic>
#include <memory>
#include <optional>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

namespace bgw::net {

/// Everything a session needs; one instance per process, shared by all threads.
struct gateway_context {
    gateway_context(std::shared_ptr<const config::config> c,
                    std::shared_ptr<credential_source> cr,
                    std::string bearer_token);

    std::shared_ptr<const config::config> cfg;  ///< immutable snapshot (reload: issue 8)
    std::shared_ptr<credential_source> creds;   ///< SigV4 credentials, refreshed; never logged
    std::string bearer;  ///< a Bedrock API key: runtime calls use it instead of SigV4

    /// The SigV4 credentials to sign with now, or a 503 that says why there are none.
    result<std::shared_ptr<const aws::timed_credentials>> sigv4_credentials() const;
    aws::signing_key_cache keys;
    asio::ssl::context tls;
    upstream_pool pool;
    policy::traffic_policy traffic;        ///< retries, cool-downs, local rate limits (issue 4)
    std::unique_ptr<batch_service> batch;  ///< the batch tier, when configured (issue 6)
    std::atomic<bool> draining{false};     ///< SIGTERM seen: finish what is in flight, take nothing
    std::atomic<int> inflight{0};          ///< requests being answered now
};

/// Serves one client connection (HTTP/1.1 keep-alive) until it closes or idles out.
awaitable<void> run_session(asio::ip::tcp::socket socket, std::shared_ptr<gateway_context> g);

/// A random request id in UUID form, for gateway-made responses and logs.
std::string new_request_id();

/// Binds `cfg.listen`, logs `listening on HOST:PORT`, serves on `cfg.threads` threads until
/// SIGINT/SIGTERM. Returns the process exit code (2 when the address cannot be bound).
int run_server(std::shared_ptr<const config::config> cfg,
               std::shared_ptr<credential_source> creds,
               std::string bearer_token);

}  // namespace bgw::net
