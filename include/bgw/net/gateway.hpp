#pragma once
/// The gateway's shared state and its entry points for the I/O shell.

#include "bgw/aws/signing_key_cache.hpp"
#include "bgw/aws/sigv4.hpp"
#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/batch_service.hpp"
#include "bgw/net/control_plane.hpp"
#include "bgw/net/credential_source.hpp"
#include "bgw/net/upstream.hpp"
#include "bgw/obs/metrics.hpp"
#include "bgw/policy/traffic.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

namespace bgw::net {

class shared_state;

/// Each event loop keeps a timer due within this period (server.cpp), so that arming a
/// deadline further away costs no system call; waits the gateway starts on every request are
/// at least this long for the same reason.
inline constexpr std::chrono::milliseconds near_timer_period{100};

/// Everything a session needs; one instance per process, shared by all threads.
struct gateway_context {
    gateway_context(std::shared_ptr<const config::config> c,
                    std::shared_ptr<credential_source> cr,
                    std::string bearer_token);
    ~gateway_context();
    gateway_context(const gateway_context&) = delete;
    gateway_context& operator=(const gateway_context&) = delete;

    /// The config now: each request takes one snapshot; SIGHUP swaps in a new one (reload()).
    std::shared_ptr<const config::config> snapshot() const { return current.load(); }
    std::atomic<std::shared_ptr<const config::config>> current;
    std::shared_ptr<credential_source> creds;  ///< SigV4 credentials, refreshed; never logged
    std::string bearer;  ///< a Bedrock API key: runtime calls use it instead of SigV4

    /// The SigV4 credentials to sign with now, or a 503 that says why there are none.
    result<std::shared_ptr<const aws::timed_credentials>> sigv4_credentials() const;
    aws::signing_key_cache keys;
    asio::ssl::context tls;  ///< upstream TLS (the client side)
    /// The TLS listener's certificate and key (issue 19), when `tls` is configured; SIGHUP
    /// swaps in a new one, for the connections that come next.
    std::atomic<std::shared_ptr<asio::ssl::context>> front_tls;
    upstream_pool pool;
    policy::traffic_policy traffic;        ///< retries, cool-downs, local rate limits (issue 4)
    std::unique_ptr<batch_service> batch;  ///< the batch tier, when configured (issue 6)
    control_plane_cache control_cache;     ///< the read-only control plane's answers
    std::atomic<bool> draining{false};     ///< SIGTERM seen: finish what is in flight, take nothing
    std::atomic<int> inflight{0};          ///< requests being answered now
    std::atomic<std::size_t> connections{0};  ///< client connections open now (limits)
    std::atomic<std::size_t> streams{0};      ///< event streams being relayed now (limits)
    /// Request body bytes held now, against limits.max_inflight_body_bytes.
    std::atomic<std::size_t> inflight_body_bytes{0};
    /// Each caller key's own rpm/tpm (issue 10), rebuilt when a reload changes them.
    std::atomic<std::shared_ptr<policy::rate_limiter>> caller_limits;
    obs::metrics metrics;  ///< what /metrics shows (issue 8)
    /// Fleet mode (issue 20): the limits and cool-downs shared on Redis; null without it.
    std::unique_ptr<shared_state> fleet;
    /// Makes the local limits (rate_limits and the caller keys') this gateway's share of the
    /// fleet's budget: what holds when the shared state does not answer.
    void share_limits(unsigned fleet_size);
    const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();

    /// Swaps in a reloaded config, or refuses it (the running one stays) with the reason.
    result<void> reload(std::shared_ptr<const config::config> next);
    /// The gauges /metrics reads from state the registry does not own.
    obs::gauges gauges() const;
    /// Counts an answer's tokens and, when `cfg` prices the model (the target's id, else the
    /// one the client named), their estimated cost; a batch answer also counts its saving.
    void count_usage(const config::config& cfg,
                     std::string_view region,
                     config::tier tier,
                     std::string_view model,
                     std::string_view target_model,
                     const policy::usage& used);
};

/// Which requests a listener serves: the runtime API (and the health and metrics endpoints
/// unless `admin_listen` is set), or only the health and metrics endpoints.
enum class listener_role { main, admin };

/// Serves one client connection (HTTP/1.1 keep-alive) until it closes or idles out.
awaitable<void> run_session(asio::ip::tcp::socket socket,
                            std::shared_ptr<gateway_context> g,
                            listener_role role = listener_role::main);

/// Serves one connection to the TLS listener: the handshake (ALPN `h2` or `http/1.1`), then
/// HTTP/2 or HTTP/1.1 as on the plain listener.
awaitable<void> run_tls_session(asio::ip::tcp::socket socket,
                                std::shared_ptr<gateway_context> g,
                                listener_role role = listener_role::main);

/// The TLS listener's context from `t`: TLS 1.2 and later, the certificate chain and key read
/// from their files (and checked to match), ALPN `h2` then `http/1.1`. The error names the file
/// and says what is wrong with it.
result<std::shared_ptr<asio::ssl::context>> make_front_tls(const config::tls_listener_config& t);

/// Runs `ioc` until it stops, guarded: a handler that throws (a library's exception inside a
/// composed operation, where no coroutine can catch it) loses its own operation, and with it the
/// connection that started it; `session_failed` is logged and counted, and the loop, with every
/// other connection on it, goes on.
void run_guarded(asio::io_context& ioc, gateway_context& g);

/// A random request id in UUID form, for gateway-made responses and logs.
std::string new_request_id();

/// `--probe URL`: one GET of an http:// URL with a 3 s bound on everything; 0 on a 2xx answer,
/// 1 otherwise (with the reason on `err`). A container health check without curl.
int probe(std::string_view url, std::ostream& err);

/// Reads the config file again (with the same command-line and environment overrides).
using config_loader = std::function<result<std::shared_ptr<const config::config>>()>;

/// Binds `cfg.listen` (and `admin_listen`), logs `listening`, serves on `cfg.threads` threads
/// until SIGINT/SIGTERM; SIGHUP calls `reload` and swaps the config in if it is valid. Returns
/// the process exit code (2 when an address cannot be bound).
int run_server(const std::shared_ptr<const config::config>& cfg,
               std::shared_ptr<credential_source> creds,
               std::string bearer_token,
               config_loader reload);

}  // namespace bgw::net
