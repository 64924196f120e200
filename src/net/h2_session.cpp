// The definitions behind bgw/net/h2_session.hpp (its comment says what they are for).

#include "bgw/net/h2_session.hpp"

#include "bgw/http/h2_server.hpp"
#include "bgw/net/client_side.hpp"
#include "bgw/net/client_watch.hpp"
#include "bgw/net/forward.hpp"
#include "bgw/net/write.hpp"
#include "bgw/obs/log.hpp"

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http.hpp>
#include <nghttp2/nghttp2.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;
using bgw::http::h2_field;

/// One stream's request, as the connection and the request's own coroutine both see it.
struct h2_stream {
    h2_stream(std::int32_t stream_id, const asio::any_io_executor& ex) : id(stream_id), wake(ex) {}
    std::int32_t id;
    request_ctx ctx;
    std::shared_ptr<client_watch> watch;  ///< while the request is upstream
    asio::steady_timer wake;              ///< a writer waiting for the client to take its piece
    bool closed = false;
    bool completed = false;  ///< closed with the whole response sent
    bool counted = false;    ///< holds a place in gateway_context::connections
};

/// The client went away (a reset stream, a lost connection) while its request was in flight:
/// what an HTTP/1.1 connection's watch does when the socket closes.
void client_left(h2_stream& st) {
    if (st.watch && st.watch->active) client_went_away(*st.watch);
}

/// The most one write to the client carries.
constexpr std::size_t write_bytes = 64 * 1024;

/// What an HTTP/2 connection's streams see of it: the protocol state, the streams' requests,
/// the writer to wake. The bytes move in h2_wire<Stream>, for a plain or a TLS connection.
class h2_link : public bgw::http::h2_events, public std::enable_shared_from_this<h2_link> {
public:
    h2_link(const asio::any_io_executor& ex,
            std::shared_ptr<gateway_context> g,
            listener_role role,
            const config::limits_config& limits)
        : ex_(ex),
          g_(std::move(g)),
          role_(role),
          idle_timeout_(limits.client_idle_timeout),
          server_(
              {
                  .max_concurrent_streams = limits.h2_max_concurrent_streams,
                  .max_header_bytes = limits.max_header_bytes,
                  .max_header_count = limits.max_header_count,
                  .max_target_bytes = limits.max_target_bytes,
                  .max_body_bytes = limits.max_body_bytes,
              },
              *this),
          wake_(ex_) {}

    h2_link(const h2_link&) = delete;
    h2_link& operator=(const h2_link&) = delete;

    ~h2_link() override {
        for (auto& [id, st] : streams_) drop(*st);
    }

    asio::any_io_executor executor() { return ex_; }
    bgw::http::h2_server& server() { return server_; }
    bool over() const { return over_; }
    std::chrono::milliseconds idle_timeout() const { return idle_timeout_; }
    /// Wakes the writer: there is something to send.
    void kick() { wake_.cancel(); }

    // h2_events
    std::optional<error> check_head(std::int32_t id, const bgw::http::h2_request& head) override;
    bool reserve_body(std::size_t bytes) override {
        const auto cap = g_->snapshot()->limits.max_inflight_body_bytes;
        if (g_->inflight_body_bytes.fetch_add(bytes) + bytes > cap) {
            g_->inflight_body_bytes -= bytes;
            return false;
        }
        return true;
    }
    void release_body(std::size_t bytes) override { g_->inflight_body_bytes -= bytes; }
    void on_request(std::int32_t id, bgw::http::h2_request& req) override;
    void on_refused(std::int32_t id, const error& why, const bgw::http::h2_request&) override;
    void on_closed(std::int32_t id, bool completed, std::uint32_t code) override;
    void on_drained(std::int32_t id) override {
        if (auto it = streams_.find(id); it != streams_.end()) it->second->wake.cancel();
    }

protected:
    asio::any_io_executor ex_;
    std::shared_ptr<gateway_context> g_;
    listener_role role_;
    std::chrono::milliseconds idle_timeout_;
    bgw::http::h2_server server_;
    asio::steady_timer wake_;
    std::map<std::int32_t, std::shared_ptr<h2_stream>> streams_;
    clock::time_point last_active_ = clock::now();
    bool reading_done_ = false;
    bool going_away_ = false;
    bool over_ = false;

    void drop(h2_stream& st) {
        if (std::exchange(st.counted, false)) --g_->connections;
    }

    /// The stream's state, made (and counted against limits.max_connections) on first use.
    std::shared_ptr<h2_stream> open_stream(std::int32_t id);

    /// Draining (SIGTERM): no new stream starts on this connection; those under way finish.
    void maybe_go_away() {
        if (g_->draining && !std::exchange(going_away_, true)) {
            server_.go_away(NGHTTP2_NO_ERROR, "the gateway is shutting down");
            kick();
        }
    }

    /// The connection is over: streams still in flight lose their client, and their upstream
    /// work stops now.
    void finish() {
        over_ = true;
        for (auto& [id, st] : streams_) {
            st->closed = true;
            client_left(*st);
            st->wake.cancel();
            drop(*st);
        }
        streams_.clear();
        if (!server_.failure().empty())
            obs::event("h2_connection_ended").str("error", server_.failure()).info();
    }
};

/// The bytes of one HTTP/2 connection: `Stream` is beast::tcp_stream or tls_stream.
template <class Stream>
class h2_wire final : public h2_link {
public:
    h2_wire(Stream& client,
            std::shared_ptr<gateway_context> g,
            listener_role role,
            const config::limits_config& limits)
        : h2_link(client.get_executor(), std::move(g), role, limits), client_(client) {}

    /// Feeds what came before (the preface, at least, on a plain connection), then reads and
    /// writes until the connection ends.
    awaitable<void> run(std::string_view first) {
        using namespace asio::experimental::awaitable_operators;
        last_active_ = clock::now();
        const bool ok = first.empty() || server_.feed(first);
        co_await (read_loop(ok) && write_loop());
        finish();
    }

private:
    Stream& client_;  ///< touched by the read and write loops only (run)

    static constexpr bool plain = std::is_same_v<Stream, beast::tcp_stream>;

    /// The next bytes from the client into `into` (0 bytes: nothing yet, read again).
    awaitable<std::pair<beast::error_code, std::size_t>> read_some(std::span<char> into) {
        if constexpr (plain) {
            // Readiness first, then a non-blocking read into the thread's buffer: an idle
            // connection holds no read buffer.
            auto& sock = client_.socket();
            auto [wec] = co_await sock.async_wait(asio::socket_base::wait_read, use_nothrow);
            if (wec) co_return std::pair{wec, std::size_t{0}};
            beast::error_code ec;
            const std::size_t n = sock.read_some(asio::buffer(into.data(), into.size()), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again)
                co_return std::pair{beast::error_code{}, std::size_t{0}};
            co_return std::pair{ec, n};
        } else {
            // OpenSSL may hold decrypted bytes the socket no longer shows: always a read.
            auto [ec, n] = co_await client_.async_read_some(asio::buffer(into.data(), into.size()),
                                                            use_nothrow);
            co_return std::pair{ec, n};
        }
    }

    awaitable<void> read_loop(bool ok);
    awaitable<void> write_loop();
};

/// One stream as the client port of its request.
class h2_port final : public client_port {
public:
    h2_port(std::shared_ptr<h2_link> conn, std::shared_ptr<h2_stream> st)
        : conn_(std::move(conn)), st_(std::move(st)) {}

    bool finished() const { return finished_; }

    asio::any_io_executor executor() override { return conn_->executor(); }

    awaitable<beast::error_code> send(http::response<http::string_body>& res,
                                      bool /*keep_alive*/,
                                      request_ctx& ctx) override {
        ctx.status = res.result_int();
        std::vector<h2_field> fields;
        fields.reserve(16);
        for (const auto& f : res)
            fields.push_back({std::string(f.name_string()), std::string(f.value())});
        const bool has_body = !res.body().empty();
        if (!conn_->server().respond(st_->id, res.result_int(), fields, has_body))
            co_return gone_error();
        head_sent_ = true;
        bytes_out_ = &ctx.bytes_out;
        for (const auto& f : fields) ctx.bytes_out += f.name.size() + f.value.size() + 4;
        if (!has_body) {
            finished_ = true;
            conn_->kick();
            co_return beast::error_code{};
        }
        co_return co_await write(res.body(), true, conn_->idle_timeout());
    }

    void begin(const relayed_answer& a, bool /*keep_alive*/) override {
        status_ = a.p.get().result_int();
        head_.clear();
        struct sink {
            std::vector<h2_field>& out;
            void set(std::string_view name, std::string_view value) {
                out.push_back({std::string(name), std::string(value)});
            }
        } fields{head_};
        relayed_fields(a, fields);
        if (const auto len = a.p.content_length())
            fields.set("content-length", std::to_string(*len));
        bytes_out_ = &a.ctx.bytes_out;
    }

    awaitable<beast::error_code> flush_head(std::chrono::milliseconds) override {
        co_return start(true) ? beast::error_code{} : gone_error();
    }

    awaitable<beast::error_code> write(std::string_view piece,
                                       bool last,
                                       std::chrono::milliseconds timeout) override {
        if (!head_sent_ && !start(!(last && piece.empty()))) co_return gone_error();
        if (last && piece.empty() && finished_) co_return beast::error_code{};
        if (!conn_->server().send_data(st_->id, piece, last)) co_return gone_error();
        *bytes_out_ += piece.size();
        if (last) finished_ = true;
        conn_->kick();
        co_return co_await taken(timeout);
    }

    void watch(const std::shared_ptr<client_watch>& w, std::chrono::milliseconds) override {
        st_->watch = w;
        if (st_->closed) client_left(*st_);
    }
    void unwatch(client_watch& w) override {
        w.active = false;
        st_->watch.reset();
    }

private:
    std::shared_ptr<h2_link> conn_;
    std::shared_ptr<h2_stream> st_;
    unsigned status_ = 200;
    std::vector<h2_field> head_;
    bool head_sent_ = false;
    bool finished_ = false;
    std::size_t* bytes_out_ = nullptr;

    static beast::error_code gone_error() {
        return asio::error::make_error_code(asio::error::connection_reset);
    }

    /// Submits the held head; `has_body` false ends the stream with it.
    bool start(bool has_body) {
        if (head_sent_) return true;
        if (!conn_->server().respond(st_->id, status_, head_, has_body)) return false;
        head_sent_ = true;
        if (!has_body) finished_ = true;
        for (const auto& f : head_) *bytes_out_ += f.name.size() + f.value.size() + 4;
        conn_->kick();
        return true;
    }

    /// Waits until the connection has taken the queued piece (the client's flow-control window
    /// let it go out): one piece in memory per stream, and a client that stops reading holds the
    /// relay, not the gateway's memory. Past `timeout` the stream is reset.
    awaitable<beast::error_code> taken(std::chrono::milliseconds timeout) {
        const auto deadline = clock::now() + timeout;
        while (!st_->closed && !conn_->over() && conn_->server().queued(st_->id) > 0) {
            if (clock::now() >= deadline) {
                conn_->server().reset(st_->id, NGHTTP2_CANCEL);
                conn_->kick();
                co_return beast::error::timeout;
            }
            st_->wake.expires_at(deadline);
            co_await st_->wake.async_wait(use_nothrow);
        }
        if ((st_->closed && !st_->completed) || (conn_->over() && !st_->completed))
            co_return gone_error();
        co_return beast::error_code{};
    }
};

/// Serves one complete request on its stream: the pipeline, as an HTTP/1.1 request gets it.
awaitable<void> serve_stream(std::shared_ptr<h2_link> conn,
                             std::shared_ptr<h2_stream> st,
                             bgw::http::h2_request req,
                             std::shared_ptr<gateway_context> g,
                             listener_role role) {
    const std::shared_ptr<const config::config> cfg = g->snapshot();
    ++g->inflight;
    struct inflight_slot {
        std::atomic<int>& n;
        ~inflight_slot() { --n; }
    } slot{g->inflight};
    h2_port port(conn, st);
    client_side c{port, st->ctx, !g->draining};
    std::string failure;
    try {
        co_await forward(c, req, *g, *cfg, role);
    } catch (const std::exception& e) {
        failure = e.what();
    } catch (...) {
        failure = "unknown exception";
    }
    if (!failure.empty()) {
        obs::event("session_failed").str("id", st->ctx.id).str("error", failure).error();
        g->metrics.session_failed();
    }
    // An answer cut short (its client gone, an upstream failure mid-body) ends the stream with
    // a reset: the client must not take a partial body for a whole one.
    if (!port.finished() && !st->closed) conn->server().reset(st->id, NGHTTP2_INTERNAL_ERROR);
    conn->kick();
    record_metrics(*g, *cfg, st->ctx);
    write_log(st->ctx);
}

/// A request refused while it arrived: the error on its stream, logged as HTTP/1.1 logs it.
awaitable<void> answer_refusal(std::shared_ptr<h2_link> conn,
                               std::shared_ptr<h2_stream> st,
                               error why,
                               std::shared_ptr<gateway_context> g) {
    const std::shared_ptr<const config::config> cfg = g->snapshot();
    h2_port port(conn, st);
    co_await send_error(port, why, st->ctx, false);
    if (!port.finished() && !st->closed) conn->server().reset(st->id, NGHTTP2_INTERNAL_ERROR);
    conn->kick();
    record_metrics(*g, *cfg, st->ctx);
    write_log(st->ctx);
}

std::shared_ptr<h2_stream> h2_link::open_stream(std::int32_t id) {
    auto& st = streams_[id];
    if (!st) {
        st = std::make_shared<h2_stream>(id, executor());
        st->ctx.id = new_request_id();
        st->counted = true;
        ++g_->connections;
    }
    return st;
}

std::optional<error> h2_link::check_head(std::int32_t id, const bgw::http::h2_request& head) {
    const auto st = open_stream(id);
    const auto cfg = g_->snapshot();
    if (g_->connections > cfg->limits.max_connections) {
        return error{http::status::service_unavailable, "ServiceUnavailableException",
                     "the gateway already holds limits.max_connections (" +
                         std::to_string(cfg->limits.max_connections) +
                         ") client connections and HTTP/2 streams; retry shortly"};
    }
    return refuse_head(head, *cfg, role_, st->ctx);
}

void h2_link::on_request(std::int32_t id, bgw::http::h2_request& req) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    asio::co_spawn(executor(),
                   serve_stream(shared_from_this(), it->second, std::move(req), g_, role_),
                   asio::detached);
    maybe_go_away();
}

void h2_link::on_refused(std::int32_t id, const error& why, const bgw::http::h2_request&) {
    // A head refused for its size never reached check_head: its stream starts here.
    const auto st = open_stream(id);
    asio::co_spawn(executor(), answer_refusal(shared_from_this(), st, why, g_), asio::detached);
}

void h2_link::on_closed(std::int32_t id, bool completed, std::uint32_t) {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    auto st = std::move(it->second);
    streams_.erase(it);
    st->closed = true;
    st->completed = completed;
    if (!completed) client_left(*st);
    st->wake.cancel();
    drop(*st);
    last_active_ = clock::now();
}

template <class Stream>
awaitable<void> h2_wire<Stream>::read_loop(bool ok) {
    // A plain connection reads into one buffer per thread; a TLS one holds its own.
    thread_local std::array<char, 16 * 1024> shared_buf;
    std::unique_ptr<char[]> own;
    std::span<char> buf(shared_buf);
    if constexpr (!plain) {
        own.reset(new char[16 * 1024]);
        buf = std::span<char>(own.get(), 16 * 1024);
    }
    while (ok && !over_) {
        auto [ec, n] = co_await read_some(buf);
        if (ec) break;
        if (n == 0) continue;
        last_active_ = clock::now();
        ok = server_.feed(std::string_view(buf.data(), n));
        kick();
        if (ok) maybe_go_away();
        if (!server_.want_read()) break;
    }
    reading_done_ = true;
    kick();
}

template <class Stream>
awaitable<void> h2_wire<Stream>::write_loop() {
    std::string out;
    auto& tcp = beast::get_lowest_layer(client_);
    for (;;) {
        out.clear();
        if (server_.take_output(out, write_bytes)) {
            tcp.expires_after(idle_timeout_);
            auto [ec, n] = co_await write_all(client_, asio::buffer(out));
            // Over TLS the reader's reads run on the same timer: it must not cut them.
            if constexpr (!plain) tcp.expires_never();
            if (ec) break;
            continue;
        }
        if (reading_done_ || (!server_.want_read() && !server_.want_write())) break;
        // Nothing to send: wait for something to be, or for the connection to idle out.
        const auto idle_at = last_active_ + idle_timeout_;
        if (server_.open_streams() == 0 && clock::now() >= idle_at) {
            server_.go_away(NGHTTP2_NO_ERROR, "idle for limits.client_idle_timeout_ms");
            continue;
        }
        wake_.expires_at(server_.open_streams() == 0 ? idle_at : clock::now() + idle_timeout_);
        co_await wake_.async_wait(use_nothrow);
    }
    out = {};
    // The reader may be waiting on a client that stays: the connection is over.
    beast::error_code ignored;
    tcp.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
    tcp.socket().cancel(ignored);
}

}  // namespace

template <class Stream>
awaitable<void> run_h2_session(Stream& client,
                               beast::flat_buffer& buf,
                               std::shared_ptr<gateway_context> g,
                               listener_role role) {
    auto conn = std::make_shared<h2_wire<Stream>>(client, g, role, g->snapshot()->limits);
    const std::string first(static_cast<const char*>(buf.data().data()), buf.size());
    buf.clear();
    buf.shrink_to_fit();
    co_await conn->run(first);
}

template awaitable<void> run_h2_session(beast::tcp_stream&,
                                        beast::flat_buffer&,
                                        std::shared_ptr<gateway_context>,
                                        listener_role);
template awaitable<void> run_h2_session(tls_stream&,
                                        beast::flat_buffer&,
                                        std::shared_ptr<gateway_context>,
                                        listener_role);

}  // namespace bgw::net
