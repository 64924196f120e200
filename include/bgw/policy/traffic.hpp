#pragma once
/// The throttling policy one request goes through (issue 4), as a plain class over the cores in
/// throttle.hpp, so the session only moves bytes and asks:
///
///   admit()          before the first attempt: is (region, model) cooling down, is a local
///                    RPM/TPM quota spent? If so the answer is a 429 at once, upstream never sees
///                    the request;
///   after_failure()  an attempt was throttled or failed transiently before any byte went to
///                    the client: retry (after how long) or stop;
///   final_throttle() the 429 the client gets when it stops on a throttle;
///   succeeded() / throttled() / settle()  what the answer teaches the policy.
///
/// Cool-downs escalate: the k-th consecutive upstream throttle of a (region, model) rests it for
/// cooldown_length(k, ...) (upstream's own Retry-After when it sent one, else base_delay
/// doubling, at most retry.max_cooldown_ms); a success ends the streak. A throttle that arrives
/// while the target already rests (a request sent before the rest began) does not escalate, so
/// a burst of answers never multiplies the rest past what the first 429 advertised. Retries of
/// requests already in flight wait out the rest too (never less than their full-jitter backoff),
/// so the gateway never sends what it would tell its clients not to send; a wait beyond what the
/// request's hold budget has left ends it with the 429 at once (hold.hpp).
///
/// Every method takes `now`; the class has no clock and no sockets. Thread-safe.

#include "bgw/config/config.hpp"
#include "bgw/policy/hold.hpp"
#include "bgw/policy/throttle.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace bgw::policy {

/// The uniform 429's content: how long to wait, and a message that says which limit it was.
struct throttle_answer {
    milliseconds wait;
    std::string message;
    std::string_view source;  ///< "local_limit", "cooldown" or "upstream" (for the log)
};

/// Tokens a request may use, estimated before the call: its output cap (`max_tokens`,
/// `inferenceConfig.maxTokens`, `max_tokens_to_sample`, `max_gen_len`,
/// `textGenerationConfig.maxTokenCount`, whichever is present) plus one token per four body
/// bytes for the input. Never zero.
std::uint64_t estimate_tokens(std::string_view body);

/// Actual usage, when the answer says: input + output tokens.
struct usage {
    std::uint64_t input = 0;
    std::uint64_t output = 0;
    std::uint64_t total() const { return input + output; }
};
/// From `X-Amzn-Bedrock-Input-Token-Count` / `X-Amzn-Bedrock-Output-Token-Count`; nullopt unless
/// both are plain decimal numbers.
std::optional<usage> usage_from_headers(std::string_view input, std::string_view output);
/// From a Converse answer's `usage.inputTokens` / `usage.outputTokens`.
std::optional<usage> usage_from_converse_body(std::string_view body);
/// From a model's answer body whatever its family: Converse `usage.inputTokens`, Anthropic
/// `usage.input_tokens`, Llama `prompt_token_count`/`generation_token_count`, Titan
/// `inputTextTokenCount` with `results[0].tokenCount` (a batch record's modelOutput).
std::optional<usage> usage_from_model_output(std::string_view body);

class traffic_policy {
public:
    traffic_policy(const config::retry_config& retry,
                   const std::map<std::string, config::rate_limit, std::less<>>& limits,
                   int retry_budget = retry_quota::initial);

    /// True when some local limit applies to `model` (only then is a token estimate needed).
    bool limits(std::string_view model) const;

    /// Before the first attempt. nullopt: go ahead (the estimate, if any, is now charged).
    std::optional<throttle_answer> admit(const std::string& region,
                                         const std::string& model,
                                         std::uint64_t estimated_tokens,
                                         clock::time_point now);

    struct step {
        bool retry;
        milliseconds wait;  ///< before the next attempt
        int cost;           ///< retry budget this retry took (for succeeded())
        std::string why;    ///< when not retrying: why not (for the log)
    };
    /// An attempt that failed: which, how, and where.
    struct failed_attempt {
        int attempt;  ///< 1 = the first
        outcome o;    ///< throttled or transient
        bool timed_out;
        const std::string& region;
        const std::string& model;
    };
    /// What this one request brings to the decision (nullopt: no bound of its own).
    struct request_bounds {
        std::optional<int> max_attempts;            ///< client_terms::max_attempts
        std::optional<milliseconds> hold_left;      ///< hold_budget::left(now)
        std::optional<milliseconds> upstream_hint;  ///< upstream_retry_after() of the answer
        bool deadline_passed;                       ///< hold_budget::expired(now)
    };
    /// Attempt number `f.attempt` (1 = the first) at `f.region`/`f.model` ended `throttled` or
    /// `transient` (a `timed_out` one costs more retry budget) with nothing relayed yet. A throttle
    /// starts or extends the (region, model) cool-down before the decision; then decide_retry()
    /// over the request's attempts and hold budget; only a retry takes from the retry budget.
    step after_failure(const failed_attempt& f,
                       clock::time_point now,
                       std::mt19937_64& rng,
                       const request_bounds& bounds = {});

    /// The 429 for a request that ends on an upstream throttle after `attempts` attempts: the
    /// wait is exactly what remains of the cool-down (when the gateway would send the request
    /// upstream again); without one, transient_pause().
    throttle_answer final_throttle(int attempts,
                                   const std::string& region,
                                   const std::string& model,
                                   clock::time_point now) const;

    /// The upstream answered with success: refunds the retry budget (what the last retry took,
    /// `last_retry_cost` from step::cost, or 1 with none) and ends the (region, model) streak.
    void succeeded(const std::string& region, const std::string& model, int last_retry_cost);
    /// Upstream throttled outside the retry loop: a `throttlingException` inside a stream, or a
    /// target the request failed over from. It counts toward the cool-down all the same.
    /// Returns how long the (region, model) now rests.
    milliseconds throttled(const std::string& region,
                           const std::string& model,
                           clock::time_point now,
                           std::optional<milliseconds> upstream_hint = std::nullopt);
    /// Replaces an admitted request's token estimate with what it used.
    void settle(const std::string& model,
                std::uint64_t estimated,
                std::uint64_t actual,
                clock::time_point now);

    int retry_budget() const { return quota_.available(); }

    /// What remains of the (region, model) rest, or zero.
    milliseconds resting(const std::string& region,
                         const std::string& model,
                         clock::time_point now) const {
        return rests_.remaining(region, model, now);
    }
    /// A rest the fleet's shared state reports (a throttle another gateway saw): kept locally
    /// too, so the rest of it costs no round trip. It neither starts nor extends a streak.
    void learn_rest(const std::string& region,
                    const std::string& model,
                    milliseconds rest,
                    clock::time_point now);

    /// The 429s the limits give, one wording wherever the decision is taken.
    static throttle_answer cooldown_answer(const std::string& region,
                                           const std::string& model,
                                           milliseconds rest);
    static throttle_answer limit_answer(const std::string& model, milliseconds wait);
    static throttle_answer caller_answer(std::string_view caller, milliseconds wait);

    /// A reloaded config's retry settings and local limits. Cool-downs, streaks and the retry
    /// budget carry over; so do the token buckets, unless `rate_limits` itself changed.
    void reconfigure(const config::retry_config& retry,
                     const std::map<std::string, config::rate_limit, std::less<>>& limits);

private:
    milliseconds cool_down(const std::string& region,
                           const std::string& model,
                           clock::time_point now,
                           std::optional<milliseconds> upstream_hint);

    /// What a reload replaces, swapped whole so a request never sees half of one.
    struct settings {
        config::retry_config retry;
        std::map<std::string, config::rate_limit, std::less<>> limits;
        std::shared_ptr<rate_limiter> limiter;
    };
    static std::shared_ptr<const settings> make_settings(
        const config::retry_config& retry,
        const std::map<std::string, config::rate_limit, std::less<>>& limits);

    std::atomic<std::shared_ptr<const settings>> settings_;
    retry_quota quota_;
    cooldown_table rests_;
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, std::string>, int> streaks_;  ///< consecutive throttles
};

}  // namespace bgw::policy
