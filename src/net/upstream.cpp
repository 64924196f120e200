#include "bgw/net/upstream.hpp"

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/error.hpp>
#include <openssl/ssl.h>

namespace bgw::net {

using tcp = asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;

bool is_benign(const beast::error_code& ec) {
    return ec == beast::http::error::end_of_stream || ec == asio::error::operation_aborted ||
           ec == asio::ssl::error::stream_truncated || ec == asio::error::connection_reset ||
           ec == asio::error::eof || ec == asio::error::broken_pipe;
}

beast::tcp_stream& upstream_connection::tcp() {
    if (auto* plain = std::get_if<beast::tcp_stream>(&stream)) return *plain;
    return beast::get_lowest_layer(std::get<tls_stream>(stream));
}

std::string pool_key(const config::region_endpoint& ep) {
    return (ep.tls ? "https://" : "http://") + ep.host + ":" + std::to_string(ep.port);
}

namespace {

/// TLS session resumption on reconnects: the newest session (TLS 1.3 ticket) each host gave,
/// per client context, offered on the next connection to that host. A resumed handshake skips
/// the certificate chain and its verification (the session was verified, for the same host
/// name, when it was made) and one signature on each side. One store per SSL_CTX, owned by
/// the context (freed with it); the pool key (scheme://host:port) names the host.
struct session_store {
    std::mutex mutex;
    std::map<std::string, SSL_SESSION*, std::less<>> newest;
    ~session_store() {
        for (auto& [key, session] : newest) SSL_SESSION_free(session);
    }
};

void free_session_store(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    delete static_cast<session_store*>(ptr);
}

/// The ex_data slots: the store on the SSL_CTX, the pool key (a `const std::string*` that
/// outlives the SSL object: upstream_connection::key) on each SSL.
int store_index() {
    static const int index =
        SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_session_store);
    return index;
}
int key_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

/// OpenSSL's new-session callback: keeps a copy of `session` as the newest for the
/// connection's host. A copy, because OpenSSL marks the connection's own session
/// non-resumable when the connection is closed without a close_notify, as the pool's are.
int remember_session(SSL* ssl, SSL_SESSION* session) {
    auto* store =
        static_cast<session_store*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), store_index()));
    const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, key_index()));
    if (!store || !key || !SSL_SESSION_is_resumable(session)) return 0;
    SSL_SESSION* copy = SSL_SESSION_dup(session);
    if (!copy) return 0;
    std::lock_guard lock(store->mutex);
    auto [it, inserted] = store->newest.try_emplace(*key, copy);
    if (!inserted) SSL_SESSION_free(std::exchange(it->second, copy));
    return 0;  // OpenSSL keeps (and frees) `session` itself
}

/// Offers the newest session `ssl`'s host gave (if any), and marks `ssl` as a connection to
/// `key` so that the sessions it is given are remembered. Each connection gets a copy of its
/// own: a session shared by connections on different threads would be reference-counted
/// inside libcrypto, where ThreadSanitizer cannot see the synchronisation, so a stored session
/// is only ever touched under the store's mutex.
void offer_session(SSL* ssl, const std::string& key) {
    SSL_set_ex_data(ssl, key_index(), const_cast<std::string*>(&key));
    auto* store =
        static_cast<session_store*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), store_index()));
    if (!store) return;
    SSL_SESSION* mine = nullptr;
    {
        std::lock_guard lock(store->mutex);
        if (auto it = store->newest.find(key); it != store->newest.end())
            mine = SSL_SESSION_dup(it->second);
    }
    if (!mine) return;
    SSL_set_session(ssl, mine);  // takes its own reference
    SSL_SESSION_free(mine);
}

}  // namespace

asio::ssl::context make_tls_context(const std::string& ca_file) {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                    asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                    asio::ssl::context::no_tlsv1_1);
    if (ca_file.empty()) {
        ctx.set_default_verify_paths();
    } else {
        ctx.load_verify_file(ca_file);
    }
    ctx.set_verify_mode(asio::ssl::verify_peer);
    // OpenSSL keeps a read and a write buffer (some 34 KiB) per connection for as long as it
    // lives; let it free them while a connection is idle, between a stream's events included.
    SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
    // Sessions for resumption on reconnect, kept per host by remember_session (not in
    // OpenSSL's internal cache, which a client cannot look up by host).
    SSL_CTX_set_ex_data(ctx.native_handle(), store_index(), new session_store);
    SSL_CTX_set_session_cache_mode(ctx.native_handle(),
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.native_handle(), remember_session);
    return ctx;
}

upstream_pool::upstream_pool(std::size_t max_idle_per_host, std::chrono::milliseconds max_idle_age)
    : max_idle_per_host_(max_idle_per_host), max_idle_age_(max_idle_age) {}

std::unique_ptr<upstream_connection> upstream_pool::take(const std::string& key,
                                                         const asio::execution_context& home) {
    std::lock_guard lock(mutex_);
    auto it = idle_.find(slot{&home, key});
    if (it == idle_.end()) return nullptr;
    auto& q = it->second;
    auto now = std::chrono::steady_clock::now();
    while (!q.empty()) {
        // Newest first: the most recently used connection is the least likely to be closed.
        auto conn = std::move(q.back());
        q.pop_back();
        if (now - conn->idle_since < max_idle_age_ && conn->tcp().socket().is_open()) {
            conn->reused = true;
            return conn;
        }
    }
    return nullptr;
}

void upstream_pool::give_back(std::unique_ptr<upstream_connection> conn) {
    // Pooling off (max_idle_per_host 0): the connection closes here.
    if (max_idle_per_host_ == 0 || !conn->tcp().socket().is_open()) return;
    // An idle connection keeps at most the head room of a plain answer (attempt.cpp), not
    // the larger room of a big body.
    if (conn->buffer.size() == 0 && conn->buffer.capacity() > 16 * 1024)
        conn->buffer.shrink_to_fit();
    conn->idle_since = std::chrono::steady_clock::now();
    const slot where{&conn->tcp().get_executor().context(), conn->key};
    std::lock_guard lock(mutex_);
    auto& q = idle_[where];
    if (q.size() >= max_idle_per_host_) q.pop_front();  // drop the oldest (q is not empty)
    q.push_back(std::move(conn));
}

void upstream_pool::clear() {
    std::map<slot, std::deque<std::unique_ptr<upstream_connection>>> gone;
    {
        std::lock_guard lock(mutex_);
        gone.swap(idle_);
    }
}

std::size_t upstream_pool::idle_count() const {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& [key, q] : idle_) n += q.size();
    return n;
}

awaitable<std::tuple<beast::error_code, std::unique_ptr<upstream_connection>>> connect_upstream(
    asio::any_io_executor ex,
    asio::ssl::context& tls,
    const config::region_endpoint& ep,
    std::chrono::milliseconds timeout) {
    using result_type = std::tuple<beast::error_code, std::unique_ptr<upstream_connection>>;
    auto deadline = std::chrono::steady_clock::now() + timeout;

    // Name resolution has no timeout of its own: race it against the connect deadline.
    tcp::resolver resolver(ex);
    asio::steady_timer timer(ex);
    timer.expires_at(deadline);
    auto raced = co_await (resolver.async_resolve(ep.host, std::to_string(ep.port), use_nothrow) ||
                           timer.async_wait(use_nothrow));
    if (raced.index() == 1) co_return result_type{beast::error::timeout, nullptr};
    auto [rec, endpoints] = std::get<0>(raced);
    if (rec) co_return result_type{rec, nullptr};

    auto conn = std::make_unique<upstream_connection>();
    conn->key = pool_key(ep);
    if (ep.tls) {
        conn->stream.emplace<tls_stream>(ex, tls);
    } else {
        conn->stream.emplace<beast::tcp_stream>(ex);
    }
    auto& tcp_layer = conn->tcp();
    tcp_layer.expires_at(deadline);
    auto [cec, connected] = co_await tcp_layer.async_connect(endpoints, use_nothrow);
    if (cec) co_return result_type{cec, nullptr};
    tcp_layer.socket().set_option(tcp::no_delay(true));

    if (ep.tls) {
        auto& s = std::get<tls_stream>(conn->stream);
        // SNI, and verify that the certificate names the host we asked for.
        if (!SSL_set_tlsext_host_name(s.native_handle(), ep.host.c_str())) {
            co_return result_type{beast::error_code(static_cast<int>(::ERR_get_error()),
                                                    asio::error::get_ssl_category()),
                                  nullptr};
        }
        s.set_verify_mode(asio::ssl::verify_peer);
        s.set_verify_callback(asio::ssl::host_name_verification(ep.host));
        offer_session(s.native_handle(), conn->key);
        auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::client, use_nothrow);
        if (hec) co_return result_type{hec, nullptr};
    }
    tcp_layer.expires_never();
    co_return result_type{beast::error_code{}, std::move(conn)};
}

}  // namespace bgw::net
