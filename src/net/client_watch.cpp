// The definitions behind bgw/net/client_watch.hpp (its comment says what they are for).

#include "bgw/net/client_watch.hpp"

#include <algorithm>

#include <boost/asio/socket_base.hpp>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

void watch_client(beast::tcp_stream& client, const std::shared_ptr<client_watch>& w) {
    w->armed = true;
    client.socket().async_wait(
        asio::socket_base::wait_read, [&client, w](const beast::error_code& ec) {
            if (!w->active || ec) return;  // inactive: the session (and `client`) may be gone
            char probe;
            beast::error_code pec;  // the socket is non-blocking (run_session)
            const auto n = client.socket().receive(asio::buffer(&probe, 1),
                                                   asio::socket_base::message_peek, pec);
            // Nothing there: a stale readiness event (bytes the session has read meanwhile without
            // the event loop; edge-triggered epoll still reports their arrival). Keep watching.
            if (pec == asio::error::would_block) return watch_client(client, w);
            if (!pec && n > 0) return;  // pipelined bytes: the client is still there
            client_went_away(*w);
        });
}

}  // namespace

void client_went_away(client_watch& w) {
    w.client_gone = true;
    // Close rather than cancel: a cancel finds nothing to cancel when the relay is between two
    // reads (its next read would then wait on as if nothing happened); a closed socket fails
    // that read at once.
    if (w.upstream) w.upstream->tcp().close();
    if (w.sleeper) w.sleeper->cancel();
}

void watch_client_soon(beast::tcp_stream& client,
                       const std::shared_ptr<client_watch>& w,
                       std::chrono::milliseconds delay) {
    w->soon.emplace(client.get_executor());
    w->soon->expires_after(delay);
    w->soon->async_wait([&client, w](const beast::error_code& ec) {
        if (ec || !w->active) return;  // stopped first: the session (and `client`) may be gone
        watch_client(client, w);
    });
}

void stop_watch(beast::tcp_stream& client, client_watch& w) {
    w.active = false;
    if (w.soon) w.soon->cancel();
    if (!w.armed) return;
    beast::error_code ignored;
    client.socket().cancel(ignored);
}

awaitable<bool> hold_on(asio::steady_timer& sleeper,
                        client_watch& watch,
                        policy::hold_budget& hold,
                        std::chrono::milliseconds wait) {
    const auto from = clock::now();
    // At least a millisecond, so a loop of waits always spends the budget.
    sleeper.expires_after(std::max(wait, std::chrono::milliseconds{1}));
    watch.sleeper = &sleeper;
    co_await sleeper.async_wait(use_nothrow);
    watch.sleeper = nullptr;
    hold.waited(from, clock::now());
    co_return !watch.client_gone;
}

}  // namespace bgw::net
