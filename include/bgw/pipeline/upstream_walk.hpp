#pragma once
/// The walk over a request's targets (issue 18), as a pure state machine the transport drives:
///
///   for (auto s = walk.next(now);; s = walk.next(now)) {
///       wait   -> wait that long (charged to the hold budget), then ask again
///       answer -> give the client that answer (a 429, or a 502/504), done
///       send   -> send the attempt, read the answer's head, and tell walk.record(...):
///                 verdict::relay means relay that answer; verdict::next means ask again
///   }
///
/// The policy: a throttle, a transient failure or no answer moves on at once to the next
/// target; only the last is retried, with backoff, as the traffic policy and the request's hold
/// budget allow. Targets cooling down or over their local limits are skipped (the last one's
/// wait is waited out when the budget allows); if none could be tried, the shortest of their
/// waits is the answer. When the last target fails for good and an earlier one was throttled or
/// skipped, the answer is a 429 with the shortest wait too (the client's best next try);
/// otherwise the last failure (relayed as upstream sent it, or a 502/504). No sockets, no
/// clock: every call takes `now`.

#include "bgw/config/config.hpp"
#include "bgw/error.hpp"
#include "bgw/fleet/shared_limits.hpp"
#include "bgw/pipeline/admit.hpp"
#include "bgw/pipeline/request_ctx.hpp"
#include "bgw/policy/hold.hpp"
#include "bgw/policy/throttle.hpp"
#include "bgw/policy/traffic.hpp"
#include "bgw/routing/router.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <variant>

namespace bgw::pipeline {

/// Send attempt number `attempt` (1 = the first at this target) to `plan.targets[target]`.
struct send {
    std::size_t target;
    int attempt;
};
/// Wait this long inside the gateway, then ask again.
struct wait {
    policy::milliseconds ms;
};
/// The request ends here with this answer, never having been relayed.
struct answer {
    std::optional<policy::throttle_answer> throttle = {};  ///< a uniform 429...
    std::optional<bgw::error> failure = {};                ///< ...or else this error
    std::optional<policy::milliseconds> pause = {};        ///< the failure's Retry-After
    std::string request_id = {};  ///< upstream's x-amzn-RequestId for a 429 (empty: ours)
    std::string note = {};        ///< appended to the log's error: why the gateway stopped
};
/// Fleet mode (issue 20): ask the shared state this (one script run), then tell consulted()
/// what it said.
struct consult {
    fleet::admission_ask ask;
};
using step = std::variant<send, wait, answer, consult>;

/// How one attempt ended, as the transport saw it.
struct attempt_report {
    policy::outcome outcome = policy::outcome::success;
    /// Set when no answer came (connect, send or read failed): the error to answer with.
    std::optional<bgw::error> no_answer;
    bool timed_out = false;                             ///< ...because a bound ran out
    std::optional<policy::milliseconds> upstream_hint;  ///< the answer's own Retry-After
    std::string upstream_request_id;                    ///< the answer's x-amzn-RequestId
    std::string description;  ///< "throttled (429 ThrottlingException)", for the log
};

enum class verdict {
    relay,  ///< relay this answer to the client, whatever it says
    next,   ///< drop it (the connection goes back if it can) and ask next()
};

/// What the metrics count about a walk.
class walk_observer {
public:
    virtual ~walk_observer() = default;
    /// A target skipped on a local limit or cool-down (`source` "local") or throttled upstream.
    virtual void throttle(const std::string& region,
                          const std::string& model,
                          std::string_view source) = 0;
    virtual void failover() = 0;
    virtual void retry() = 0;
};

/// Fleet mode's side of a walk: where admission is asked first.
struct shared_admission {
    /// `rate_limits` as configured: the fleet's budget (the traffic policy's local limits are
    /// this gateway's share of it, for when the shared state does not answer).
    const std::map<std::string, config::rate_limit, std::less<>>& limits;
    std::string_view key_prefix;
    shared_ledger& ledger;  ///< where shared charges are corrected
};

/// What a walk needs beside the request's context.
struct walk_inputs {
    const routing::runtime_request& rt;
    const routing::plan& plan;
    std::string_view body;  ///< the client's body (token estimates)
    policy::traffic_policy& traffic;
    policy::hold_budget& hold;
    const config::retry_config& retry;
    int max_attempts;  ///< policy::client_terms::max_attempts
    std::mt19937_64& rng;
    walk_observer& observer;
    /// Fleet mode; null: the gateway decides alone.
    const shared_admission* shared = nullptr;
    /// The caller key's charge, when admission left it pending (fleet mode).
    const pending_caller* caller = nullptr;
};

class upstream_walk {
public:
    upstream_walk(const walk_inputs& in, request_ctx& ctx);

    /// What to do now.
    step next(clock::time_point now);
    /// How the last `send` ended.
    verdict record(const attempt_report& r, clock::time_point now);
    /// What the shared state said to the last `consult`; nullopt: it did not answer (in time),
    /// so this admission is decided locally.
    void consulted(const std::optional<fleet::admission_verdict>& v, clock::time_point now);
    /// After record(): a throttle seen on this walk whose rest the fleet should know of (the
    /// target's region and key, and the rest in force), taken once.
    struct rest_note {
        std::string region;
        std::string model;
        policy::milliseconds rest;
    };
    std::optional<rest_note> take_rest_note();

    /// After verdict::relay: the target whose answer is relayed.
    const routing::target& answered() const { return in_.plan.targets[index_]; }
    /// The key the traffic policy knows the answered target by (its model id, or the operation).
    const std::string& key() const { return key_; }
    /// After verdict::relay of a transient error out of retries: the Retry-After it carries
    /// unless upstream gave its own.
    std::optional<policy::milliseconds> pause() const { return pause_; }
    /// The relayed answer's status: a success refunds the retry budget and ends the streak.
    void relayed(unsigned status);
    /// A throttling exception inside the relayed event stream.
    void stream_throttled(clock::time_point now);

private:
    enum class phase { admit, consulting, send, wait_then_send, done };
    void enter(std::size_t i);
    std::optional<step> admit_target(clock::time_point now);
    std::optional<step> admit_locally(clock::time_point now);
    std::optional<step> refused(policy::throttle_answer no, clock::time_point now);
    fleet::admission_ask ask_for(const routing::target& t) const;
    void note_rest(const routing::target& t, clock::time_point now);
    void skip(std::string_view why);
    void keep_shortest(policy::throttle_answer a);
    verdict leave_target(const attempt_report& r, bool throttled, clock::time_point now);
    verdict stop_here(const attempt_report& r,
                      bool throttled,
                      const policy::traffic_policy::step& s,
                      clock::time_point now);
    step no_target_left();

    walk_inputs in_;
    request_ctx& ctx_;
    bool model_op_;
    std::uint64_t estimate_ = 0;
    std::size_t index_ = 0;
    int attempt_ = 0;
    phase phase_ = phase::admit;
    std::string key_;
    policy::milliseconds wait_{0};
    std::optional<policy::throttle_answer> held_;  ///< the shortest wait of a target left behind
    std::optional<answer> final_;
    std::optional<policy::milliseconds> pause_;
    int last_retry_cost_ = 0;
    bool caller_pending_ = false;  ///< fleet mode: the caller's charge is still to be taken
    bool decide_locally_ = false;  ///< the shared state did not answer this admission
    std::uint64_t charge_ = 0;     ///< what the target in admission is charged
    std::optional<rest_note> rest_note_;
    std::optional<step> queued_;  ///< what next() says first (a refusal the fleet gave)
};

/// The request as `t` takes it: its model id in the path, its service tier (in a Converse body,
/// or as `X-Amzn-Bedrock-Service-Tier` for InvokeModel). `body` stays a view of the client's
/// unless a rewrite is needed, kept in `rewritten`.
struct shaped_request {
    routing::runtime_request rt;
    std::string_view body;
    std::string_view tier_header;
};
shaped_request shape_for_target(const routing::runtime_request& rt,
                                const routing::target& t,
                                std::string_view body,
                                std::optional<std::string>& rewritten);

}  // namespace bgw::pipeline
