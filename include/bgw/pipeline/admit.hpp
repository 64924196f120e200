#pragma once
/// Everything a runtime request goes through before anything is sent upstream (issue 18): the
/// operation its path names, the caller key's say on the model, the event-stream bound, the
/// credentials to sign with, the route and the key's regions, the client's own retries and
/// patience, and the key's rpm/tpm. Pure: the transport hands in the request, the gateway-wide
/// state it reads, and gets back an admitted request or the answer to give instead.

#include "bgw/aws/credential_chain.hpp"
#include "bgw/config/config.hpp"
#include "bgw/error.hpp"
#include "bgw/pipeline/request_ctx.hpp"
#include "bgw/policy/callers.hpp"
#include "bgw/policy/hold.hpp"
#include "bgw/policy/throttle.hpp"
#include "bgw/policy/traffic.hpp"
#include "bgw/routing/router.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <atomic>
#include <cstddef>
#include <memory>
#include <utility>
#include <variant>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace bgw::pipeline {

/// One of `limits.max_streams` event-stream slots, given back when the request ends.
class stream_slot {
public:
    stream_slot() = default;
    explicit stream_slot(std::atomic<std::size_t>& count) : count_(&count) {}
    stream_slot(stream_slot&& o) noexcept : count_(std::exchange(o.count_, nullptr)) {}
    stream_slot& operator=(stream_slot&& o) noexcept {
        if (this != &o) {
            release();
            count_ = std::exchange(o.count_, nullptr);
        }
        return *this;
    }
    stream_slot(const stream_slot&) = delete;
    stream_slot& operator=(const stream_slot&) = delete;
    ~stream_slot() { release(); }

private:
    void release() {
        if (count_) --*count_;
        count_ = nullptr;
    }
    std::atomic<std::size_t>* count_ = nullptr;
};

/// A caller key's charge not taken yet: in fleet mode (issue 20) it goes to the shared state
/// with the request's first target, in the same round trip.
struct pending_caller {
    std::string name;
    config::rate_limit limit;  ///< the key's own rpm/tpm, fleet-wide
    std::uint64_t estimate = 0;
    /// The local limiter (the fleet's budget divided among its gateways) for when the shared
    /// state does not answer.
    std::shared_ptr<policy::rate_limiter> local;
};

/// Charges `c` to its local limiter: nullopt when it fits (the charge is held in `ctx`), else
/// the 429 to answer.
std::optional<policy::throttle_answer> charge_locally(const pending_caller& c,
                                                      request_ctx& ctx,
                                                      clock::time_point now);

/// The gateway-wide state admission reads and takes from.
struct admission_state {
    const config::config& cfg;
    std::atomic<std::size_t>& streams;  ///< event streams being relayed now
    std::shared_ptr<policy::rate_limiter> caller_limits;
    /// Fleet mode: the caller key's charge is left pending (admitted::caller), for the shared
    /// state to take.
    bool shared = false;
    /// The SigV4 credentials to sign with (an error when there are none usable); ignored with a
    /// Bedrock API key (`bearer`).
    const result<std::shared_ptr<const aws::timed_credentials>>* signing = nullptr;
    bool bearer = false;
};

/// A request that may go upstream: what it is, where it may run, and on what terms.
struct admitted {
    routing::runtime_request rt;
    routing::plan plan;  ///< only the targets in regions the caller key may use
    policy::client_terms terms;
    std::shared_ptr<const aws::timed_credentials> signing;  ///< null with a Bedrock API key
    stream_slot slot;
    std::optional<pending_caller> caller;  ///< fleet mode: the caller key's charge, not yet taken
};

/// What a refused request gets instead: an error, or (a caller key over its rpm/tpm) a 429.
using refusal = std::variant<error, policy::throttle_answer>;

/// Admits `req` (its head and whole body) for caller `who`, or says why not. Sets `ctx.op`,
/// `ctx.model` and `ctx.route` as soon as they are known; charges the caller key's limiter
/// (recorded in `ctx.held`), or in fleet mode leaves that charge pending.
std::variant<admitted, refusal> admit(
    const boost::beast::http::request<boost::beast::http::string_body>& req,
    const policy::caller& who,
    admission_state& state,
    request_ctx& ctx);

/// The operations that run a model: the ones local quotas and cool-downs apply to.
bool runs_model(routing::operation op);

}  // namespace bgw::pipeline
