// bench_upstream: a fast fake Bedrock runtime for bench/run, so that the upstream is never the
// bottleneck of a measurement.
//
//   bench_upstream [--port N] [--threads N] [--invoke-bytes N] [--latency-us N]
//                  [--stream-events N] [--stream-gap-ms X] [--tls-cert FILE --tls-key FILE]
//
// Answers POST /model/{modelId}/invoke and /converse with canned JSON of --invoke-bytes bytes
// (default 1024; a model id `bench-<N>` asks for N bytes instead) and the token-count headers,
// and /converse-stream and /invoke-with-response-stream with --stream-events event-stream frames
// (default 50), chunked, one frame per chunk, --stream-gap-ms apart (default 0: the whole body
// in one write). --latency-us delays every answer's head on a timer. Keep-alive; --threads
// event loops (default 1), each with its own io_context, connections handed out round-robin.
// With --tls-cert and --tls-key (PEM: the certificate chain and its key) every connection is
// TLS, as Bedrock's always are; without them, plain HTTP with nothing TLS on the path.
//
// It does NOT verify signatures, and never looks at a request body: speed is the point here.
// The test fakes (tests/fakes/fake_bedrock) are the ones that check every signature.
//
// Prints `listening on 127.0.0.1:PORT` once (port 0, the default, picks a free one); exits 0
// on SIGTERM or SIGINT, after `tls handshakes N, resumed M` when serving TLS (so a run can tell
// how often its clients resumed a session).

#include "bgw/net/write.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "canned_responses.hpp"
#include "request_head.hpp"
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <signal.h>

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using bgw::bench::operation;
using socket_type = asio::basic_stream_socket<tcp, asio::io_context::executor_type>;
// Asio's own TLS stream: its write_some takes the first non-empty buffer, and nothing here
// needs Beast's flattening (the issue-23 trap; bgw::net::write_all avoids it anyway).
using tls_socket_type = asio::ssl::stream<socket_type>;
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

struct settings {
    unsigned short port = 0;
    unsigned threads = 1;
    std::size_t invoke_bytes = 1024;
    std::chrono::microseconds latency{0};
    unsigned stream_events = 50;
    std::chrono::microseconds stream_gap{0};
    std::string tls_cert;  ///< PEM certificate chain; with tls_key, serve TLS
    std::string tls_key;
};

/// Every answer, built once before the first connection.
struct canned {
    std::string invoke;
    std::string converse;
    bgw::bench::stream_response converse_stream;
    bgw::bench::stream_response invoke_stream;
    std::string not_found;
    std::string bad_request;
};

/// Largest body a `bench-<N>` model id may ask for (Bedrock's own request cap).
constexpr std::size_t max_sized_body = 25'000'000;

/// The answer for a `bench-<N>` model id, built on first use. One cache per event loop thread,
/// so no lock: a connection's coroutine always runs on the thread of its io_context.
const std::string& sized_answer(operation op, std::size_t bytes) {
    thread_local std::map<std::pair<operation, std::size_t>, std::string> cache;
    auto [it, inserted] = cache.try_emplace({op, bytes});
    if (inserted) {
        it->second =
            bgw::bench::json_response(op == operation::invoke ? bgw::bench::invoke_body(bytes)
                                                              : bgw::bench::converse_body(bytes));
    }
    return it->second;
}

/// The size a model id asks for (`bench-<N>`), or 0 when it asks for none.
std::size_t asked_size(std::string_view model_id) {
    constexpr std::string_view prefix = "bench-";
    if (!model_id.starts_with(prefix)) return 0;
    model_id.remove_prefix(prefix.size());
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(model_id.data(), model_id.data() + model_id.size(), n);
    if (ec != std::errc{} || end != model_id.data() + model_id.size() || n > max_sized_body)
        return 0;
    return n;
}

/// Writes a streamed answer: at once when there is no gap, else event by event on a timer.
template <class Stream>
asio::awaitable<bool> write_stream(Stream& sock,
                                   const bgw::bench::stream_response& r,
                                   std::chrono::microseconds gap,
                                   asio::steady_timer& timer) {
    if (gap.count() == 0) {
        auto [ec, n] = co_await asio::async_write(sock, asio::buffer(r.whole), use_nothrow);
        co_return !ec;
    }
    auto [ec, n] =
        co_await bgw::net::write_all(sock, asio::buffer(r.head), asio::buffer(r.chunks.front()));
    if (ec) co_return false;
    for (std::size_t i = 1; i < r.chunks.size(); ++i) {
        timer.expires_after(gap);
        co_await timer.async_wait(use_nothrow);
        auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(r.chunks[i]), use_nothrow);
        if (wec) co_return false;  // the peer went away: nothing more to do
    }
    co_return true;
}

/// One client connection, plain or TLS: read a head, skip its body, answer, until the peer
/// closes.
template <class Stream>
asio::awaitable<void> serve_requests(Stream& sock, const settings& s, const canned& c) {
    boost::system::error_code ignored;
    std::vector<char> buf(64 * 1024);
    std::size_t start = 0;
    std::size_t end = 0;
    asio::steady_timer timer(sock.get_executor());
    for (;;) {
        std::size_t head_size = 0;
        while ((head_size = bgw::bench::head_end({buf.data() + start, end - start})) == 0) {
            if (start > 0) {
                std::memmove(buf.data(), buf.data() + start, end - start);
                end -= start;
                start = 0;
            }
            if (end == buf.size()) co_return;  // a head over 64 KiB: not from our clients
            auto [ec, n] = co_await sock.async_read_some(
                asio::buffer(buf.data() + end, buf.size() - end), use_nothrow);
            if (ec) co_return;
            end += n;
        }
        const auto head = bgw::bench::parse_head({buf.data() + start, head_size});
        if (!head.ok) {
            co_await asio::async_write(sock, asio::buffer(c.bad_request), use_nothrow);
            co_return;
        }
        // Decide the answer now: the head's views die when the body is read over them.
        const auto call = bgw::bench::parse_model_call(head.target);
        const std::size_t size = asked_size(call.model_id);
        const bool keep_alive = head.keep_alive;
        const bool post = head.method == "POST";

        // Skip the body: the answer does not depend on it.
        start += head_size;
        std::size_t remaining = head.content_length;
        const std::size_t have = std::min(remaining, end - start);
        start += have;
        remaining -= have;
        if (start == end) start = end = 0;
        while (remaining > 0) {
            auto [ec, n] = co_await sock.async_read_some(asio::buffer(buf), use_nothrow);
            if (ec) co_return;
            if (n <= remaining) {
                remaining -= n;
            } else {  // the next (pipelined) request starts in this read
                start = remaining;
                end = n;
                remaining = 0;
            }
        }

        if (s.latency.count() > 0) {
            timer.expires_after(s.latency);
            co_await timer.async_wait(use_nothrow);
        }
        bool ok = true;
        const std::string* whole = &c.not_found;
        if (post && (call.op == operation::invoke || call.op == operation::converse)) {
            whole = size ? &sized_answer(call.op, size)
                         : (call.op == operation::invoke ? &c.invoke : &c.converse);
        } else if (post && call.op == operation::converse_stream) {
            whole = nullptr;
            ok = co_await write_stream(sock, c.converse_stream, s.stream_gap, timer);
        } else if (post && call.op == operation::invoke_stream) {
            whole = nullptr;
            ok = co_await write_stream(sock, c.invoke_stream, s.stream_gap, timer);
        }
        if (whole) {
            auto [ec, n] = co_await asio::async_write(sock, asio::buffer(*whole), use_nothrow);
            ok = !ec;
        }
        if (!ok) co_return;
        if (!keep_alive) {
            sock.lowest_layer().shutdown(tcp::socket::shutdown_send, ignored);
            co_return;
        }
    }
}

asio::awaitable<void> serve(socket_type sock, const settings& s, const canned& c) {
    boost::system::error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);  // event chunks go out as they are written
    co_await serve_requests(sock, s, c);
}

/// Completed TLS handshakes, and how many of them resumed a session.
std::atomic<unsigned long> tls_handshakes{0};
std::atomic<unsigned long> tls_resumed{0};

/// A TLS connection: the handshake (bounded, so a client that never finishes it does not hold
/// the connection), then the same loop as plain HTTP.
asio::awaitable<void> serve_tls(socket_type sock,
                                asio::ssl::context& tls,
                                const settings& s,
                                const canned& c) {
    using namespace std::chrono_literals;
    using namespace asio::experimental::awaitable_operators;
    boost::system::error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);
    tls_socket_type stream(std::move(sock), tls);
    asio::steady_timer deadline(stream.get_executor());
    deadline.expires_after(10s);
    auto first = co_await (stream.async_handshake(asio::ssl::stream_base::server, use_nothrow) ||
                           deadline.async_wait(use_nothrow));
    if (first.index() != 0 || std::get<0>(std::get<0>(first))) co_return;
    tls_handshakes.fetch_add(1, std::memory_order_relaxed);
    if (SSL_session_reused(stream.native_handle()))
        tls_resumed.fetch_add(1, std::memory_order_relaxed);
    co_await serve_requests(stream, s, c);
}

using context_list = std::vector<std::unique_ptr<asio::io_context>>;

/// Accepts on the first event loop and hands each connection to the next loop in turn.
asio::awaitable<void> accept_loop(tcp::acceptor& acceptor,
                                  context_list& loops,
                                  asio::ssl::context* tls,
                                  const settings& s,
                                  const canned& c) {
    asio::steady_timer backoff(acceptor.get_executor());
    for (std::size_t i = 0;; ++i) {
        auto& loop = *loops[i % loops.size()];
        auto [ec, sock] = co_await acceptor.async_accept(loop.get_executor(), use_nothrow);
        if (ec == asio::error::operation_aborted) co_return;
        if (ec) {
            // Out of descriptors, say: wait a little rather than spin, and say so once.
            static bool said = false;
            if (!std::exchange(said, true))
                std::fprintf(stderr, "bench_upstream: accept failed: %s\n", ec.message().c_str());
            backoff.expires_after(std::chrono::milliseconds(10));
            co_await backoff.async_wait(use_nothrow);
            continue;
        }
        if (tls) {
            asio::co_spawn(loop, serve_tls(std::move(sock), *tls, s, c), asio::detached);
        } else {
            asio::co_spawn(loop, serve(std::move(sock), s, c), asio::detached);
        }
    }
}

void usage() {
    std::fprintf(stderr,
                 "usage: bench_upstream [--port N] [--threads N] [--invoke-bytes N] "
                 "[--latency-us N] [--stream-events N] [--stream-gap-ms X] "
                 "[--tls-cert FILE --tls-key FILE]\n");
}

/// A non-negative number for `flag`, or nullopt after saying why.
std::optional<double> number(std::string_view flag, const std::string& value, double max) {
    double v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc{} || end != value.data() + value.size() || v < 0 || v > max) {
        std::fprintf(stderr, "bench_upstream: %.*s takes a number from 0 to %.0f, not '%s'\n",
                     static_cast<int>(flag.size()), flag.data(), max, value.c_str());
        return std::nullopt;
    }
    return v;
}

std::optional<settings> parse_args(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (i + 1 >= argc) {
            usage();
            return std::nullopt;
        }
        const std::string value = argv[++i];
        std::optional<double> v;
        if (flag == "--port") {
            if (!(v = number(flag, value, 65535))) return std::nullopt;
            s.port = static_cast<unsigned short>(*v);
        } else if (flag == "--threads") {
            if (!(v = number(flag, value, 256)) || *v < 1) return std::nullopt;
            s.threads = static_cast<unsigned>(*v);
        } else if (flag == "--invoke-bytes") {
            if (!(v = number(flag, value, max_sized_body))) return std::nullopt;
            s.invoke_bytes = static_cast<std::size_t>(*v);
        } else if (flag == "--latency-us") {
            if (!(v = number(flag, value, 60e6))) return std::nullopt;
            s.latency = std::chrono::microseconds(static_cast<long>(*v));
        } else if (flag == "--stream-events") {
            if (!(v = number(flag, value, 100'000)) || *v < 1) return std::nullopt;
            s.stream_events = static_cast<unsigned>(*v);
        } else if (flag == "--stream-gap-ms") {
            if (!(v = number(flag, value, 600'000))) return std::nullopt;
            s.stream_gap = std::chrono::microseconds(static_cast<long>(*v * 1000));
        } else if (flag == "--tls-cert") {
            s.tls_cert = value;
        } else if (flag == "--tls-key") {
            s.tls_key = value;
        } else {
            std::fprintf(stderr, "bench_upstream: unknown option %s\n", argv[i - 1]);
            usage();
            return std::nullopt;
        }
    }
    if (s.tls_cert.empty() != s.tls_key.empty()) {
        std::fprintf(stderr, "bench_upstream: --tls-cert and --tls-key go together\n");
        return std::nullopt;
    }
    return s;
}

/// The server TLS context, or nullopt after saying why (a missing or unreadable file).
std::optional<asio::ssl::context> make_server_tls(const settings& s) {
    try {
        asio::ssl::context ctx(asio::ssl::context::tls_server);
        ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1);
        ctx.use_certificate_chain_file(s.tls_cert);
        ctx.use_private_key_file(s.tls_key, asio::ssl::context::pem);
        return ctx;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_upstream: cannot use %s / %s: %s\n", s.tls_cert.c_str(),
                     s.tls_key.c_str(), e.what());
        return std::nullopt;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
        usage();
        return 0;
    }
    const auto parsed = parse_args(argc, argv);
    if (!parsed) return 2;
    const settings s = *parsed;

    // Blocked before any thread exists, so sigwait() below is the only place they arrive.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    const canned c{bgw::bench::json_response(bgw::bench::invoke_body(s.invoke_bytes)),
                   bgw::bench::json_response(bgw::bench::converse_body(s.invoke_bytes)),
                   bgw::bench::converse_stream(s.stream_events),
                   bgw::bench::invoke_stream(s.stream_events),
                   bgw::bench::not_found_response(),
                   bgw::bench::bad_request_response()};

    // One single-threaded io_context per thread: no strands and no shared queue to contend on.
    context_list loops;
    for (unsigned i = 0; i < s.threads; ++i) loops.push_back(std::make_unique<asio::io_context>(1));
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
    for (auto& l : loops) work.push_back(asio::make_work_guard(*l));

    std::optional<asio::ssl::context> tls;
    if (!s.tls_cert.empty() && !(tls = make_server_tls(s))) return 2;

    tcp::acceptor acceptor(*loops.front());
    try {
        const tcp::endpoint ep(asio::ip::make_address_v4("127.0.0.1"), s.port);
        acceptor.open(ep.protocol());
        acceptor.set_option(tcp::acceptor::reuse_address(true));
        acceptor.bind(ep);
        acceptor.listen(asio::socket_base::max_listen_connections);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_upstream: cannot listen on 127.0.0.1:%u: %s\n", s.port,
                     e.what());
        return 2;
    }
    std::cout << "listening on 127.0.0.1:" << acceptor.local_endpoint().port() << std::endl;
    asio::co_spawn(*loops.front(), accept_loop(acceptor, loops, tls ? &*tls : nullptr, s, c),
                   asio::detached);

    std::vector<std::thread> threads;
    for (auto& l : loops) threads.emplace_back([&io = *l] { io.run(); });
    int sig = 0;
    sigwait(&signals, &sig);
    for (auto& l : loops) l->stop();
    for (auto& t : threads) t.join();
    if (tls)
        std::cout << "tls handshakes " << tls_handshakes.load() << ", resumed "
                  << tls_resumed.load() << std::endl;
    return 0;
}
