#pragma once
/// Fleet mode (issue 20): the gateway's side of the Redis server a fleet shares its limits and
/// cool-downs on. One connection per event loop (redis_link), so a request only ever talks to
/// the connection of its own thread; what the answers mean is fleet/shared_limits.hpp's.
///
/// Redis failing never stops traffic: a call that does not answer within timeout_ms (or a link
/// that is down) is a fallback decision, taken with the local limits, which hold this gateway's
/// share of the fleet budget (fleet_size, configured or as the heartbeats see it).

#include "bgw/config/config.hpp"
#include "bgw/error.hpp"
#include "bgw/fleet/shared_limits.hpp"
#include "bgw/net/asio.hpp"
#include "bgw/net/redis_link.hpp"
#include "bgw/obs/metrics.hpp"
#include "bgw/pipeline/request_ctx.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

namespace bgw::net {

class shared_state final : public pipeline::shared_ledger {
public:
    /// Reads the password file and makes the TLS context; an error says which file and why.
    static result<std::unique_ptr<shared_state>> make(const config::shared_state_config& cfg);
    ~shared_state() override;
    shared_state(const shared_state&) = delete;
    shared_state& operator=(const shared_state&) = delete;

    /// One link per event loop, before any of them runs.
    void attach(asio::io_context& ioc);
    /// Connects every link, and starts the heartbeat on the first event loop. `on_size` is
    /// called (on that loop) when the fleet's size changes.
    void start(std::function<void(unsigned)> on_size);
    /// Closes every link (each on its own loop) and waits for them, at most a second.
    awaitable<void> stop();

    /// The admission of one request, on the link of the loop `ex` runs on. nullopt: Redis did
    /// not answer in time (or is down): decide locally (counted as a fallback).
    awaitable<std::optional<fleet::admission_verdict>> admit(const asio::any_io_executor& ex,
                                                             const fleet::admission_ask& ask);
    /// Tells the fleet of a rest (awaited, bounded by timeout_ms, so that the client's answer
    /// follows it); the answer is the rest in force fleet-wide, when Redis said.
    awaitable<std::optional<std::chrono::milliseconds>> publish_rest(
        const asio::any_io_executor& ex,
        const std::string& region,
        const std::string& model,
        std::chrono::milliseconds rest);
    /// The same without waiting (a throttle inside a stream already relayed).
    void publish_rest_detached(const asio::any_io_executor& ex,
                               const std::string& region,
                               const std::string& model,
                               std::chrono::milliseconds rest);
    /// shared_ledger: sent on the link of the calling thread, without waiting.
    void correct(const std::string& key,
                 std::uint64_t tpm,
                 std::uint64_t estimated,
                 std::uint64_t actual) override;

    const std::string& key_prefix() const { return cfg_.key_prefix; }
    /// The fleet size the local limits are divided by.
    unsigned fleet_size() const { return fleet_size_.load(); }
    obs::shared_state_gauges gauges() const;

private:
    explicit shared_state(config::shared_state_config cfg, redis_settings settings);
    class link_watch;
    redis_link* link_for(const asio::any_io_executor& ex) const;
    redis_link* link_of_this_thread() const;
    awaitable<void> heartbeat(std::function<void(unsigned)> on_size);
    void went_down(std::size_t link, std::string_view reason);
    void came_up(std::size_t link);

    config::shared_state_config cfg_;
    redis_settings settings_;
    std::string member_;  ///< this gateway in the fleet's heartbeat set
    struct slot {
        asio::io_context* ioc = nullptr;
        std::unique_ptr<link_watch> watch;
        std::unique_ptr<redis_link> link;
    };
    std::vector<slot> links_;
    std::atomic<unsigned> fleet_size_{1};
    std::atomic<bool> stopping_{false};
    std::atomic<std::uint64_t> timeouts_{0}, connection_errors_{0}, reply_errors_{0}, fallbacks_{0};

    /// Episodes: one log line when the first link goes down, one when all are up again.
    mutable std::mutex episode_mutex_;
    std::vector<bool> link_down_;  ///< by link: down since its last link_up (or never up)
    std::size_t links_down_ = 0;
    bool episode_logged_ = false;
    bool connected_once_ = false;
    std::chrono::steady_clock::time_point episode_start_;
    std::uint64_t fallbacks_at_start_ = 0;  ///< fallbacks_ when every link was last up
};

}  // namespace bgw::net
