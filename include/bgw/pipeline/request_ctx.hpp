#pragma once
/// One request's state on its way through the pipeline (issue 18): what the access log line and
/// the metrics say about it, and the token charges it holds until its usage is known. The
/// transport (HTTP/1.1 today, HTTP/2 next) fills in the bytes; admit() and upstream_walk fill in
/// the rest. No sockets, no clock of its own.

#include "bgw/http/event_relay.hpp"
#include "bgw/policy/throttle.hpp"
#include "bgw/policy/traffic.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bgw::pipeline {

using clock = std::chrono::steady_clock;

/// Where fleet mode (issue 20) corrects a token estimate it charged in the shared state.
class shared_ledger {
public:
    virtual ~shared_ledger() = default;
    /// The bucket pair `key` (with `tpm` tokens a minute) held `estimated` for a request that
    /// used `actual`. Sent without waiting for an answer: never on a request's path.
    virtual void correct(const std::string& key,
                         std::uint64_t tpm,
                         std::uint64_t estimated,
                         std::uint64_t actual) = 0;
};

/// The token estimates a request has charged (a caller key's rpm/tpm, a target's local limit),
/// each replaced by the actual usage once, as soon as it is known. A charge lives in a local
/// limiter or, in fleet mode, in the shared state.
class charges {
public:
    /// The caller key `name`'s limiter holds `estimate` tokens for this request.
    void hold_caller(std::shared_ptr<policy::rate_limiter> limits,
                     std::string name,
                     std::uint64_t estimate);
    /// The shared pair `key` (`tpm` a minute) holds the caller's `estimate`.
    void hold_caller_shared(shared_ledger& ledger,
                            std::string key,
                            std::uint64_t tpm,
                            std::uint64_t estimate);
    /// `traffic`'s local limit of `model` holds `estimate` tokens for this request.
    void hold_target(policy::traffic_policy& traffic, std::string model, std::uint64_t estimate);
    /// The shared pair `key` (`tpm` a minute) holds the target's `estimate`.
    void hold_target_shared(shared_ledger& ledger,
                            std::string key,
                            std::uint64_t tpm,
                            std::uint64_t estimate);
    /// Settles what is held against `actual` tokens: the target's charge (then dropped: a
    /// target left behind is settled at 0 before the next is charged), and the caller's (once).
    void settle(std::uint64_t actual, clock::time_point now);

private:
    /// A charge in the shared state.
    struct shared_charge {
        shared_ledger* ledger = nullptr;
        std::string key;
        std::uint64_t tpm = 0;
        std::uint64_t estimate = 0;
        void settle(std::uint64_t actual);
    };
    std::shared_ptr<policy::rate_limiter> caller_limits_;
    std::string caller_;
    std::uint64_t caller_estimate_ = 0;
    bool caller_settled_ = false;
    shared_charge shared_caller_;
    policy::traffic_policy* traffic_ = nullptr;
    std::string target_model_;  ///< the target that holds a charge, if any
    std::uint64_t target_estimate_ = 0;
    shared_charge shared_target_;
};

/// What happened to one request: the access log line, the metrics, the gateway's own response
/// headers, and the charges to settle.
struct request_ctx {
    std::string id;
    std::string_view op = "-";
    std::string model;
    std::string region;
    unsigned status = 0;
    int attempts = 0;
    std::size_t bytes_in = 0;
    std::size_t bytes_out = 0;
    std::string upstream_request_id;
    int upstream_throttles = 0;      ///< attempts upstream answered with a throttle
    std::string_view throttle;       ///< when the gateway answered 429: which limit
    std::string route;               ///< the route the model id named, if any
    std::string_view tier;           ///< the tier of the target in use (set once routed)
    std::vector<std::string> tried;  ///< targets left behind, and why
    std::string batch_record;        ///< the record a batch-tier request became
    std::string error;
    clock::time_point start = clock::now();
    std::optional<bgw::http::stream_summary> stream;  ///< set for event-stream responses
    std::optional<policy::usage> tokens;              ///< what the answer says it used
    std::string target_model;  ///< the model id sent upstream (a provisioned ARN...), for prices
    std::optional<clock::time_point> first_event;  ///< when a stream's first event went out
    std::string_view caller;  ///< the caller key's name (never the key), when keys are on
    charges held;             ///< token estimates to settle against usage
};

}  // namespace bgw::pipeline
