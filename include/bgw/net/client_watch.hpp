#pragma once
/// Watching the client while its request is in flight (a client that hangs up cancels the
/// upstream at once), read deadlines that leave the socket open for an answer, and the waits the
/// gateway holds a request for.

#include "bgw/net/asio.hpp"
#include "bgw/net/upstream.hpp"
#include "bgw/policy/hold.hpp"

#include <chrono>
#include <memory>
#include <optional>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace bgw::net {

/// Watches the client while its request is in flight: a client that closes (or resets) is
/// noticed at once, and the upstream connection is closed then rather than at the next write.
/// Bytes from the client (a pipelined request) end the watch without counting as gone.
struct client_watch {
    bool active = true;
    bool client_gone = false;
    bool armed = false;                       ///< the socket wait has started
    upstream_connection* upstream = nullptr;  ///< the connection in use, if any yet
    asio::steady_timer* sleeper = nullptr;    ///< the wait before a retry, while it runs
    std::optional<asio::steady_timer> soon;   ///< until the watch starts (watch_client_soon)
};

/// The client went away while its request was in flight: `client_gone`, and the upstream
/// connection in use (and any wait before a retry) ends now. The HTTP/1.1 socket watch and an
/// HTTP/2 stream's reset both end here.
void client_went_away(client_watch& w);

/// Starts the watch after `delay`: a watch costs system calls (re-arming the socket in epoll,
/// a peek) that a request answered sooner does not need; the long requests it is for (a model
/// generating) take seconds. A client that left meanwhile is seen as soon as the watch starts.
void watch_client_soon(beast::tcp_stream& client,
                       const std::shared_ptr<client_watch>& w,
                       std::chrono::milliseconds delay);

/// Ends a watch: a pending wait completes (aborted) and finds it inactive.
void stop_watch(beast::tcp_stream& client, client_watch& w);

/// A deadline on a client read that cancels the read but leaves the socket open, so the
/// gateway can still answer 408 (tcp_stream's own expiry closes the socket). Both the timer's
/// handler and the session run on the connection's thread (its io_context); `armed` goes false
/// before the session moves on, so a late handler never touches the socket.
class read_deadline {
public:
    read_deadline(beast::tcp_stream& client, std::chrono::milliseconds after)
        : state_(std::make_shared<state>()), timer_(client.get_executor()) {
        client.expires_never();
        timer_.expires_after(after);
        timer_.async_wait([st = state_, &sock = client.socket()](const beast::error_code& ec) {
            if (ec || !st->armed) return;
            st->fired = true;
            beast::error_code ignored;
            sock.cancel(ignored);
        });
    }
    ~read_deadline() {
        state_->armed = false;
        timer_.cancel();
    }
    read_deadline(const read_deadline&) = delete;
    read_deadline& operator=(const read_deadline&) = delete;
    bool fired() const { return state_->fired; }

private:
    struct state {
        bool armed = true;
        bool fired = false;
    };
    std::shared_ptr<state> state_;
    asio::steady_timer timer_;
};

/// Waits `wait` inside the gateway (a backoff, a cool-down, a local limit's refill), charged to
/// the request's hold budget. A client that hangs up ends the wait at once: false then.
awaitable<bool> hold_on(asio::steady_timer& sleeper,
                        client_watch& watch,
                        policy::hold_budget& hold,
                        std::chrono::milliseconds wait);

}  // namespace bgw::net
