// The listener: one io_context shared by a thread per core, a strand per connection.

#include "bgw/net/gateway.hpp"

#include <exception>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <spdlog/spdlog.h>

namespace bgw::net {
namespace {

using tcp = asio::ip::tcp;

/// Every co_spawn ends here: a stray exception is logged, never escapes run().
void log_exception(std::exception_ptr e) {
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        spdlog::error("{{\"event\":\"session_exception\",\"what\":\"{}\"}}", ex.what());
    } catch (...) {
        spdlog::error("{}", R"({"event":"session_exception"})");
    }
}

awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor,
                            std::shared_ptr<gateway_context> g) {
    auto& ioc = static_cast<asio::io_context&>(acceptor->get_executor().context());
    for (;;) {
        auto [ec, socket] = co_await acceptor->async_accept(asio::make_strand(ioc), use_nothrow);
        if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
        if (ec) {
            // EMFILE and friends: log and keep accepting; the next accept may succeed.
            spdlog::warn("{{\"event\":\"accept_failed\",\"error\":\"{}\"}}", ec.message());
            continue;
        }
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto ex = socket.get_executor();
        asio::co_spawn(ex, run_session(std::move(socket), g), log_exception);
    }
}

/// SIGTERM/SIGINT: stop accepting (new connections are refused), let what is in flight finish
/// within shutdown_grace, then stop.
awaitable<void> drain(std::shared_ptr<tcp::acceptor> acceptor,
                      std::shared_ptr<gateway_context> g,
                      asio::io_context& ioc,
                      int sig) {
    g->draining = true;
    co_await asio::post(acceptor->get_executor(), asio::use_awaitable);  // the acceptor's strand
    beast::error_code ignored;
    acceptor->close(ignored);
    const auto grace = g->cfg->shutdown_grace;
    spdlog::info("{{\"event\":\"stopping\",\"signal\":{},\"inflight\":{},\"grace_ms\":{}}}", sig,
                 g->inflight.load(), grace.count());
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (g->inflight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        timer.expires_after(std::chrono::milliseconds(20));
        co_await timer.async_wait(use_nothrow);
    }
    spdlog::info("{{\"event\":\"drained\",\"unfinished\":{}}}", g->inflight.load());
    ioc.stop();
}

/// Which credentials the gateway signs with, for the start-up line: a source and at most the
/// access key id's last four characters.
std::string credentials_summary(const gateway_context& g) {
    if (!g.bearer.empty()) return "bearer (Bedrock API key)";
    if (!g.creds) return "none";
    auto usable = g.creds->usable();
    if (!usable) return "none";
    return (*usable)->source + " " + aws::redacted_key_id((*usable)->creds.access_key_id);
}

}  // namespace

int run_server(std::shared_ptr<const config::config> cfg,
               std::shared_ptr<credential_source> creds,
               std::string bearer_token) {
    unsigned threads =
        cfg->threads ? cfg->threads : std::max(1u, std::thread::hardware_concurrency());
    asio::io_context ioc(static_cast<int>(threads));

    std::shared_ptr<gateway_context> g;
    try {
        g = std::make_shared<gateway_context>(cfg, std::move(creds), std::move(bearer_token));
    } catch (const std::exception& e) {
        spdlog::critical("cannot set up upstream TLS (upstream.ca_file \"{}\"): {}",
                         cfg->upstream.ca_file, e.what());
        return 2;
    }

    if (cfg->batch.enabled) {
        try {
            g->batch = std::make_unique<batch_service>(*cfg);
        } catch (const std::exception& e) {
            spdlog::critical("cannot use the batch spool: {}", e.what());
            return 2;
        }
    }

    beast::error_code ec;
    auto address = asio::ip::make_address(cfg->listen_host, ec);
    if (ec) {
        spdlog::critical("listen: \"{}\" is not an IP address: {}", cfg->listen_host, ec.message());
        return 2;
    }
    auto acceptor_ptr = std::make_shared<tcp::acceptor>(asio::make_strand(ioc));
    tcp::acceptor& acceptor = *acceptor_ptr;
    tcp::endpoint ep(address, cfg->listen_port);
    if (acceptor.open(ep.protocol(), ec); !ec)
        acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(ep, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        spdlog::critical("cannot listen on {}:{}: {}", cfg->listen_host, cfg->listen_port,
                         ec.message());
        return 2;
    }
    auto bound = acceptor.local_endpoint();
    std::string shown = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                : bound.address().to_string();
    spdlog::info("listening on {}:{} (threads={}, default_region={}, regions={}, credentials={})",
                 shown, bound.port(), threads, cfg->default_region, cfg->regions.size(),
                 credentials_summary(*g));

    asio::co_spawn(acceptor.get_executor(), accept_loop(acceptor_ptr, g), log_exception);
    if (g->batch) asio::co_spawn(asio::make_strand(ioc), g->batch->run(*g), log_exception);

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&ioc, acceptor_ptr, g](const beast::error_code& sec, int sig) {
        if (sec) return;
        asio::co_spawn(ioc, drain(acceptor_ptr, g, ioc, sig), log_exception);
    });

    std::vector<std::thread> pool;
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& t : pool) t.join();
    spdlog::info("{}", R"({"event":"stopped"})");
    return 0;
}

}  // namespace bgw::net
