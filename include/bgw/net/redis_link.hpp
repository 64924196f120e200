#pragma once
/// One pipelined connection to Redis per io_context (the gateway runs one per thread): RESP
/// from hiredis's formatter and reader (fleet/resp.hpp), the I/O Asio's, on the caller's thread.
/// Many calls are in flight at once; the commands queued in one turn of the event loop go out
/// in one write, and replies are matched to calls in order. The link reconnects by itself, and
/// while it is down every call is answered at once as unavailable: the hot path never waits
/// for Redis longer than settings.timeout.

#include "bgw/fleet/redis_url.hpp"
#include "bgw/fleet/resp.hpp"
#include "bgw/net/asio.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

namespace bgw::net {

struct redis_settings {
    fleet::redis_url url;
    std::string password;                  ///< AUTH [url.username] password when not empty
    std::chrono::milliseconds timeout{5};  ///< bound on each call; set-up gets max(this, 1 s)
    /// Required when url.tls: the client context (CA store). The link adds SNI and verifies
    /// the certificate's name against url.host.
    std::shared_ptr<asio::ssl::context> tls;
};

/// What the link reports (metrics, logs). Called on the link's thread; a callback must not call
/// the link back. Nothing is reported after stop().
class redis_events {
public:
    virtual ~redis_events() = default;
    /// The connection is ready (set-up done): at the first connect and after every outage.
    virtual void link_up() = 0;
    /// The link went down: once per outage (not per failed reconnect attempt), including a
    /// first connect that fails. `reason` never contains the password.
    virtual void link_down(std::string_view reason) = 0;
    /// One failure: "timeout" (a command without a reply in time), "connection" (a connect or
    /// set-up attempt failed, or the connection broke), "reply" (a Redis error reply, except a
    /// NOSCRIPT the link recovers from; or a protocol error).
    virtual void link_error(std::string_view kind) = 0;
};

/// The link. Lives on one io_context (one thread): every member but up() is called on that
/// thread. Destroy it before its io_context (the destructor stops it).
class redis_link {
public:
    /// Commands in flight at most (sent or queued, replies not yet read, late ones included);
    /// past it calls are unavailable at once and sends are dropped.
    static constexpr std::size_t max_in_flight = 10000;
    /// Timeouts in a row after which the connection is given up (closed, reconnected).
    static constexpr unsigned timeout_streak_limit = 3;

    redis_link(asio::io_context& ioc, redis_settings s, redis_events& ev);
    ~redis_link();
    redis_link(const redis_link&) = delete;
    redis_link& operator=(const redis_link&) = delete;

    /// Connects in the background; reconnects whenever the connection is lost, with backoff
    /// (100 ms doubling to 5 s, each wait drawn from [d/2, d]). Set-up (resolve, connect, TLS
    /// handshake, AUTH, SELECT, PING) is bounded by max(timeout, 1 s) in all. Once only.
    void start();
    /// Closes the connection; pending calls complete as unavailable; no more reconnects and no
    /// more events.
    void stop();
    /// Whether the connection is in service. Any thread.
    bool up() const;

    /// One command. nullopt = unavailable: the link is down or too many calls are in flight
    /// (answered at once), or no reply came within settings.timeout (a "timeout"; the late
    /// reply is read and dropped, so the pipeline stays in step). A Redis error reply is a
    /// reply (type error).
    awaitable<std::optional<fleet::reply>> call(std::vector<std::string> args);

    /// EVALSHA sha numkeys keys... args...; on a NOSCRIPT error reply (a restarted Redis,
    /// SCRIPT FLUSH), EVAL with the body once and that reply. `s`, `keys` and `args` must
    /// outlive the co_await (they do when awaited in the same expression).
    awaitable<std::optional<fleet::reply>> eval(const fleet::lua_script& s,
                                                const std::vector<std::string>& keys,
                                                const std::vector<std::string>& args);

    /// Fire-and-forget: queued when up, dropped when down or full; the reply is read and
    /// dropped (an error reply counted as "reply").
    void send(std::vector<std::string> args);
    /// Fire-and-forget script: EVALSHA, resent once with EVAL on NOSCRIPT.
    void eval_detached(const fleet::lua_script& s,
                       std::vector<std::string> keys,
                       std::vector<std::string> args);

    class impl;

private:
    std::shared_ptr<impl> impl_;
};

}  // namespace bgw::net
