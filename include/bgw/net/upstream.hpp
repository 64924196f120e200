#pragma once
/// Connections to Bedrock: verified TLS (or plain http for an explicit endpoint override),
/// connect timeouts, and a keep-alive pool per host and per io_context (a connection only ever
/// serves the thread whose event loop it is registered with).

#include "bgw/config/config.hpp"
#include "bgw/net/asio.hpp"

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <variant>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

namespace bgw::net {

using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/// One connection to one upstream host; used by one request at a time.
struct upstream_connection {
    std::string key;  ///< pool key: scheme://host:port
    std::variant<std::monostate, beast::tcp_stream, tls_stream> stream;  ///< set by connect
    beast::flat_buffer buffer;  ///< bytes read past the previous response
    std::chrono::steady_clock::time_point idle_since{};
    bool reused = false;  ///< came from the pool (the peer may have closed it meanwhile)

    beast::tcp_stream& tcp();
};

/// The key under which connections to `ep` are pooled.
std::string pool_key(const config::region_endpoint& ep);

/// Builds the client TLS context: peer verification against `ca_file` or the system store.
/// Throws only at start-up (bad CA file).
asio::ssl::context make_tls_context(const std::string& ca_file);

/// Idle keep-alive connections, per host and per io_context, bounded; thread-safe.
class upstream_pool {
public:
    upstream_pool(std::size_t max_idle_per_host, std::chrono::milliseconds max_idle_age);
    /// An idle connection for `key` whose socket belongs to `home`, or nullptr.
    std::unique_ptr<upstream_connection> take(const std::string& key,
                                              const asio::execution_context& home);
    /// Returns a connection whose last response was read completely and that may be reused.
    void give_back(std::unique_ptr<upstream_connection> conn);
    std::size_t idle_count() const;
    /// Closes every idle connection: before the io_contexts they belong to go away.
    void clear();

private:
    using slot = std::pair<const asio::execution_context*, std::string>;
    std::size_t max_idle_per_host_;
    std::chrono::milliseconds max_idle_age_;
    mutable std::mutex mutex_;
    std::map<slot, std::deque<std::unique_ptr<upstream_connection>>> idle_;
};

/// Resolves, connects and (for https) handshakes with SNI and host-name verification, all within
/// `timeout`. Errors: beast::error::timeout, resolve/connect/handshake errors.
awaitable<std::tuple<beast::error_code, std::unique_ptr<upstream_connection>>> connect_upstream(
    asio::any_io_executor ex,
    asio::ssl::context& tls,
    const config::region_endpoint& ep,
    std::chrono::milliseconds timeout);

}  // namespace bgw::net
