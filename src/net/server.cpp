// The listener: one io_context per thread, each run by its own thread, and every connection
// lives on one of them from accept to close. Nothing of a session crosses threads, so no strand
// is needed and no handler hops between cores; what sessions share (gateway_context) is
// thread-safe. Listeners, signals, drain and the batch tier run on the first io_context.

#include "bgw/net/gateway.hpp"
#include "bgw/net/shared_state.hpp"
#include "bgw/obs/log.hpp"

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

namespace bgw::net {
namespace {

using tcp = asio::ip::tcp;

/// Every co_spawn ends here: an exception that escaped a task (a session's requests catch their
/// own: serve_guarded) is logged as session_failed, and ends that task only.
void log_exception(const std::exception_ptr& e) {
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        obs::event("session_failed").str("error", ex.what()).str("where", "task").error();
    } catch (...) {
        obs::event("session_failed").str("error", "unknown exception").str("where", "task").error();
    }
}

/// Keeps a timer due within `period` on an io_context, always. Every socket operation of a
/// session arms a deadline seconds away; Asio reprograms the kernel timer (a timerfd_settime
/// system call) whenever a new deadline is the earliest one, which on a lightly loaded thread is
/// nearly every time. With this timer always nearer, arming a deadline is a heap insert and no
/// system call; the cost is one wake-up per period per thread.
awaitable<void> keep_a_near_timer(std::chrono::milliseconds period) {
    asio::steady_timer tick(co_await asio::this_coro::executor);
    for (;;) {
        tick.expires_after(period);
        auto [ec] = co_await tick.async_wait(use_nothrow);
        if (ec) co_return;
    }
}

/// The io_contexts that run sessions, one per thread; connections are dealt out in turn.
struct workers {
    std::vector<std::unique_ptr<asio::io_context>> contexts;
    std::size_t next = 0;  ///< used by one accept loop at a time (each on the first context)

    explicit workers(unsigned n) {
        for (unsigned i = 0; i < n; ++i)
            contexts.push_back(std::make_unique<asio::io_context>(1));  // one thread each
    }
    asio::io_context& first() { return *contexts.front(); }
    asio::io_context& take_turn() { return *contexts[next++ % contexts.size()]; }
    void stop() {
        for (auto& c : contexts) c->stop();
    }
};

/// Accept failures back off: EMFILE (and ENFILE, ENOBUFS...) stays until connections close, and
/// retrying at once would spin a core. The wait doubles from the first to the last.
constexpr std::chrono::milliseconds accept_backoff_first{5};
constexpr std::chrono::milliseconds accept_backoff_last{1000};

/// What serves an accepted connection: run_session, or run_tls_session.
using session_runner = awaitable<void> (*)(tcp::socket,
                                           std::shared_ptr<gateway_context>,
                                           listener_role);

awaitable<void> accept_loop(std::shared_ptr<tcp::acceptor> acceptor,
                            std::shared_ptr<gateway_context> g,
                            listener_role role,
                            workers& w,
                            session_runner serve) {
    asio::steady_timer backoff(acceptor->get_executor());
    std::chrono::milliseconds wait{0};  // zero: not in an episode of failures
    std::uint64_t failures = 0;         // in this episode
    for (;;) {
        auto& home = w.take_turn();
        auto [ec, socket] = co_await acceptor->async_accept(home.get_executor(), use_nothrow);
        if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
        if (ec) {
            g->metrics.accept_failed();
            // One line per episode, however long it lasts; the counter has every failure.
            if (wait.count() == 0) obs::event("accept_failed").str("error", ec.message()).warn();
            ++failures;
            wait = std::clamp(wait * 2, accept_backoff_first, accept_backoff_last);
            backoff.expires_after(wait);
            co_await backoff.async_wait(use_nothrow);
            continue;
        }
        if (wait.count() != 0) {
            obs::event("accept_recovered").unum("failures", failures).info();
            wait = std::chrono::milliseconds{0};
            failures = 0;
        }
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto ex = socket.get_executor();
        asio::co_spawn(ex, serve(std::move(socket), g, role), log_exception);
    }
}

/// SIGTERM/SIGINT: stop accepting (new connections are refused), let what is in flight finish
/// within shutdown_grace, then stop. The admin listener stays open meanwhile, so /readyz can say
/// the gateway is draining.
awaitable<void> drain(std::vector<std::shared_ptr<tcp::acceptor>> acceptors,
                      std::shared_ptr<gateway_context> g,
                      workers& w,
                      int sig) {
    g->draining = true;
    beast::error_code ignored;
    for (auto& a : acceptors) a->close(ignored);
    const auto grace = g->snapshot()->shutdown_grace;
    obs::event("stopping")
        .num("signal", sig)
        .num("inflight", g->inflight.load())
        .num("grace_ms", grace.count())
        .info();
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (g->inflight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        timer.expires_after(std::chrono::milliseconds(20));
        co_await timer.async_wait(use_nothrow);
    }
    obs::event("drained").num("unfinished", g->inflight.load()).info();
    if (g->fleet) co_await g->fleet->stop();
    w.stop();
}

/// SIGHUP: read the config file again; swap it in whole, or keep the running one and say why.
void reload(gateway_context& g, const config_loader& load) {
    auto next = load();
    if (next) {
        if (auto r = g.reload(*next); !r) next = r.error();
    }
    if (!next) {
        g.metrics.reload("error");
        obs::event("config_reload_refused").str("error", next.error().message).error();
        return;
    }
    g.metrics.reload("ok");
    auto cfg = g.snapshot();
    obs::event("config_reloaded")
        .unum("routes", cfg->routes.size())
        .unum("regions", cfg->regions.size())
        .str("log_level", cfg->log_level)
        .info();
}

/// SIGHUP, for the TLS listener: its certificate and key read again from the files the config
/// now names; the new ones serve the connections that come next. A pair that does not load
/// leaves the running one in place, and says why.
void reload_front_tls(gateway_context& g) {
    const auto cfg = g.snapshot();
    if (!cfg->tls) return;
    auto next = make_front_tls(*cfg->tls);
    if (!next) {
        obs::event("tls_reload_refused").str("error", next.error().message).error();
        return;
    }
    g.front_tls.store(std::move(*next));
    obs::event("tls_reloaded").str("cert_file", cfg->tls->cert_file).info();
}

/// Waits for SIGHUP until the io_context stops.
void watch_hangup(const std::shared_ptr<asio::signal_set>& hup,
                  const std::shared_ptr<gateway_context>& g,
                  const std::shared_ptr<const config_loader>& load) {
    hup->async_wait([hup, g, load](const beast::error_code& ec, int) {
        if (ec) return;
        reload(*g, *load);
        reload_front_tls(*g);
        watch_hangup(hup, g, load);
    });
}

/// Opens a listening socket on `host:port`; the error says which and why.
result<std::shared_ptr<tcp::acceptor>> open_acceptor(asio::io_context& ioc,
                                                     const std::string& host,
                                                     std::uint16_t port,
                                                     std::string_view key) {
    beast::error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec) {
        return validation_error(std::string(key) + ": \"" + host +
                                "\" is not an IP address: " + ec.message());
    }
    auto acceptor = std::make_shared<tcp::acceptor>(ioc);
    tcp::endpoint ep(address, port);
    if (acceptor->open(ep.protocol(), ec); !ec)
        acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        return validation_error(std::string(key) + ": cannot listen on " + host + ":" +
                                std::to_string(port) + ": " + ec.message());
    }
    return acceptor;
}

/// `HOST:PORT` as bound (the port the system chose for port 0).
std::string bound_address(const tcp::acceptor& a) {
    // Appended piece by piece: `"[" + s` (an insert at the front) trips a GCC 12 -O3 false
    // positive (-Wrestrict/-Wstringop-overflow in the inlined copy, GCC PR 105329).
    const auto ep = a.local_endpoint();
    const bool v6 = ep.address().is_v6();
    std::string out = v6 ? "[" : "";
    out += ep.address().to_string();
    out += v6 ? "]:" : ":";
    out += std::to_string(ep.port());
    return out;
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

/// The state every session shares, the batch tier's included; null, the reason logged, when
/// it cannot be set up (upstream TLS, the batch spool).
std::shared_ptr<gateway_context> start_context(const std::shared_ptr<const config::config>& cfg,
                                               std::shared_ptr<credential_source> creds,
                                               std::string bearer_token) {
    std::shared_ptr<gateway_context> g;
    try {
        g = std::make_shared<gateway_context>(cfg, std::move(creds), std::move(bearer_token));
    } catch (const std::exception& e) {
        obs::event("cannot_start")
            .str("error", "cannot set up upstream TLS (upstream.ca_file \"" +
                              cfg->upstream.ca_file + "\"): " + e.what())
            .critical();
        return nullptr;
    }
    if (cfg->batch.enabled) {
        try {
            g->batch = std::make_unique<batch_service>(*cfg);
        } catch (const std::exception& e) {
            obs::event("cannot_start")
                .str("error", std::string("cannot use the batch spool: ") + e.what())
                .critical();
            return nullptr;
        }
    }
    return g;
}

/// The listening sockets of `listen` and, when the config has one, `admin_listen`.
struct listeners {
    std::shared_ptr<tcp::acceptor> main;
    std::shared_ptr<tcp::acceptor> admin;  ///< null without admin_listen
    std::shared_ptr<tcp::acceptor> tls;    ///< null without tls
};

result<listeners> open_listeners(asio::io_context& ioc, const config::config& cfg) {
    auto main = open_acceptor(ioc, cfg.listen_host, cfg.listen_port, "listen");
    if (!main) return main.error();
    listeners l{.main = std::move(*main), .admin = nullptr, .tls = nullptr};
    if (cfg.admin_listen) {
        auto a = open_acceptor(ioc, cfg.admin_listen->host, cfg.admin_listen->port, "admin_listen");
        if (!a) return a.error();
        l.admin = std::move(*a);
    }
    if (cfg.tls) {
        auto t = open_acceptor(ioc, cfg.tls->listen.host, cfg.tls->listen.port, "tls.listen");
        if (!t) return t.error();
        l.tls = std::move(*t);
    }
    return l;
}

/// The start-up line. Its message reads as it did before the structured form, for people and
/// for scripts that wait for "listening on HOST:PORT".
void log_listening(const listeners& l,
                   unsigned threads,
                   const config::config& cfg,
                   const gateway_context& g) {
    obs::event started("listening");
    started.str("message", "listening on " + bound_address(*l.main));
    started.str("address", bound_address(*l.main));
    if (l.admin) started.str("admin_address", bound_address(*l.admin));
    if (l.tls) started.str("tls_address", bound_address(*l.tls));
    started.unum("threads", threads)
        .str("default_region", cfg.default_region)
        .unum("regions", cfg.regions.size())
        .unum("routes", cfg.routes.size())
        .str("credentials", credentials_summary(g))
        .str("version", BGW_VERSION)
        .info();
}

/// Runs every io_context, the first on this thread and each other on its own, until drain
/// stops them (or the first runs out of work).
void run_workers(workers& w, gateway_context& g) {
    // The other contexts have no work until a connection arrives: keep them running until
    // drain stops them.
    for (auto& c : w.contexts)
        asio::co_spawn(*c, keep_a_near_timer(near_timer_period), log_exception);
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep;
    std::vector<std::thread> pool;
    for (std::size_t i = 1; i < w.contexts.size(); ++i) {
        auto& c = *w.contexts[i];
        keep.push_back(asio::make_work_guard(c));
        pool.emplace_back([&c, &g] { run_guarded(c, g); });  // joined below, before g can go
    }
    run_guarded(w.first(), g);
    w.stop();  // the first context can also end by running out of work
    for (auto& t : pool) t.join();
}

}  // namespace

void run_guarded(asio::io_context& ioc, gateway_context& g) {
    for (;;) {
        try {
            ioc.run();
            return;
        } catch (const std::exception& e) {
            obs::event("session_failed").str("error", e.what()).str("where", "event loop").error();
        } catch (...) {
            obs::event("session_failed")
                .str("error", "unknown exception")
                .str("where", "event loop")
                .error();
        }
        g.metrics.session_failed();
    }
}

int run_server(const std::shared_ptr<const config::config>& cfg,
               std::shared_ptr<credential_source> creds,
               std::string bearer_token,
               config_loader load) {
    unsigned threads =
        cfg->threads ? cfg->threads : std::max(1u, std::thread::hardware_concurrency());
    workers w(threads);
    auto& ioc = w.first();

    auto g = start_context(cfg, std::move(creds), std::move(bearer_token));
    if (!g) return 2;
    if (cfg->tls) {
        auto tls = make_front_tls(*cfg->tls);
        if (!tls) {
            obs::event("cannot_start").str("error", tls.error().message).critical();
            return 2;
        }
        g->front_tls.store(std::move(*tls));
    }
    if (cfg->shared_state) {
        // Fleet mode: one Redis connection per event loop, connecting in the background; until
        // they answer, the local limits (this gateway's share) decide.
        auto fleet = shared_state::make(*cfg->shared_state);
        if (!fleet) {
            obs::event("cannot_start").str("error", fleet.error().message).critical();
            return 2;
        }
        for (auto& c : w.contexts) (*fleet)->attach(*c);
        g->fleet = std::move(*fleet);
        g->share_limits(g->fleet->fleet_size());
        g->fleet->start([gp = g.get()](unsigned n) { gp->share_limits(n); });
    }
    auto l = open_listeners(ioc, *cfg);
    if (!l) {
        obs::event("cannot_listen").str("error", l.error().message).critical();
        return 2;
    }

    asio::co_spawn(l->main->get_executor(),
                   accept_loop(l->main, g, listener_role::main, w, run_session), log_exception);
    if (l->admin) {
        asio::co_spawn(l->admin->get_executor(),
                       accept_loop(l->admin, g, listener_role::admin, w, run_session),
                       log_exception);
    }
    if (l->tls) {
        asio::co_spawn(l->tls->get_executor(),
                       accept_loop(l->tls, g, listener_role::main, w, run_tls_session),
                       log_exception);
    }
    std::vector<std::shared_ptr<tcp::acceptor>> stop_accepting{l->main};
    if (l->tls) stop_accepting.push_back(l->tls);
    if (g->batch) asio::co_spawn(ioc, g->batch->run(*g), log_exception);

    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&ioc, &w, acceptors = std::move(stop_accepting), g](
                           const beast::error_code& sec, int sig) {
        if (sec) return;
        asio::co_spawn(ioc, drain(acceptors, g, w, sig), log_exception);
    });
    watch_hangup(std::make_shared<asio::signal_set>(ioc, SIGHUP), g,
                 std::make_shared<const config_loader>(std::move(load)));
    // Only now: a script that signals the gateway as soon as it reads this line must find the
    // handlers in place (a SIGHUP before them would end the process).
    log_listening(*l, threads, *cfg, *g);

    run_workers(w, *g);
    g->pool.clear();   // idle upstream sockets go before the io_contexts they belong to
    g->fleet.reset();  // so do the Redis connections
    obs::event("stopped").info();
    return 0;
}

}  // namespace bgw::net
