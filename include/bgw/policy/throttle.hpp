#pragma once
/// Throttling and retry policy as pure functions and small classes (no sockets, no clock of
/// their own: every call takes `now`, so tests drive time by hand).
///
/// - classify(): what an upstream answer means (throttled, transient, final);
/// - backoff_cap() / full_jitter(): the AWS "full jitter" schedule;
/// - retry_quota: the AWS SDK standard-mode retry budget (a token bucket that retries draw
///   from and successes refill), so a throttling storm is not multiplied by retries;
/// - cooldown_table: after an upstream throttle, that (region, model) rests for a while;
/// - rate_limiter: local requests- and tokens-per-minute quotas with exact waits.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <utility>

namespace bgw::policy {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// What an upstream answer (or failure to get one) means for retrying and for the client.
enum class outcome {
    success,    ///< 1xx-3xx: relay as it is
    throttled,  ///< slow down: retry later, and the client's final answer is the uniform 429
    transient,  ///< the service hiccuped: retry (500, 502, 503, 504, ModelNotReady, no answer)
    final,      ///< the caller is wrong (or it is not ours to judge): pass through, never retry
};

/// The error code an AWS JSON service meant: `x-amzn-ErrorType` up to the first ':', else the
/// body's `__type` or `code`, after the last '#'. Empty when there is none.
std::string error_code(std::string_view error_type_header, std::string_view body);

/// True for the codes that mean "slow down": ThrottlingException, Throttling,
/// ThrottledException, TooManyRequestsException, RequestLimitExceeded,
/// ProvisionedThroughputExceededException, botocore's other throttling codes
/// (RequestThrottledException, RequestThrottled, SlowDown, BandwidthLimitExceeded), and the
/// event-stream member name `throttlingException`.
bool is_throttling_code(std::string_view code);

/// Classifies an upstream response by status and error code (see error_code()): any 429 or 509
/// or throttling code is throttled; 500/502/503/504 and ModelNotReadyException are transient;
/// other 4xx/5xx are final; the rest is success.
outcome classify(unsigned status, std::string_view code);

/// Classifies "no response": a reset or a timeout before any response byte is transient.
inline outcome classify_no_response() { return outcome::transient; }

/// The cap of the full-jitter schedule for retry number `retry` (1 = the first retry):
/// min(max_delay, base * 2^(retry-1)).
milliseconds backoff_cap(int retry, milliseconds base, milliseconds max_delay);

/// A uniformly random wait in [0, backoff_cap(...)] ("full jitter").
milliseconds full_jitter(int retry,
                         milliseconds base,
                         milliseconds max_delay,
                         std::mt19937_64& rng);

/// The AWS SDK standard retry quota: 500 tokens; a retry costs 5 (10 after a timeout); a
/// success refunds what its retry cost, or 1 when it needed none. Thread-safe.
class retry_quota {
public:
    static constexpr int initial = 500;
    static constexpr int retry_cost = 5;
    static constexpr int timeout_cost = 10;
    static constexpr int no_retry_increment = 1;

    explicit retry_quota(int capacity = initial) : capacity_(capacity), available_(capacity) {}

    /// Takes the cost of one retry; false (and nothing taken) when the budget is spent.
    bool try_acquire(bool after_timeout);
    /// A request succeeded: `retry_cost_paid` is what its last retry took (0 if none).
    void on_success(int retry_cost_paid);
    int available() const;

private:
    mutable std::mutex mutex_;
    int capacity_;
    int available_;
};

/// Rest periods per (region, model) after an upstream throttle. Thread-safe.
class cooldown_table {
public:
    /// Starts (or extends) a rest until now + `length`.
    void throttled(const std::string& region,
                   const std::string& model,
                   clock::time_point now,
                   milliseconds length);
    /// What remains of the rest, or zero.
    milliseconds remaining(const std::string& region,
                           const std::string& model,
                           clock::time_point now) const;

private:
    mutable std::mutex mutex_;
    std::map<std::pair<std::string, std::string>, clock::time_point> until_;
};

}  // namespace bgw::policy

namespace bgw::policy {

/// A model's local quota: requests and tokens per minute (0 = unlimited).
struct model_limit {
    std::uint64_t rpm = 0;
    std::uint64_t tpm = 0;
};

/// Local rate limits from account quotas, as token buckets that refill continuously (a full
/// minute's quota at most), per model id as the client sends it; the `"*"` entry applies to
/// each model without its own (every such model gets its own buckets). Thread-safe.
class rate_limiter {
public:
    explicit rate_limiter(std::map<std::string, model_limit> limits) : limits_(std::move(limits)) {}

    struct decision {
        bool allowed;
        milliseconds wait;  ///< when refused: the exact time until this request would fit
    };

    /// Admits one request estimated at `tokens` (taking from both buckets), or says how long
    /// until it would fit (taking nothing). A request above a whole minute's token quota is
    /// admitted once the bucket is full, so it can never wait forever.
    decision try_acquire(const std::string& model, std::uint64_t tokens, clock::time_point now);
    /// Replaces an admitted request's estimate with its actual usage (refund or debt).
    void correct(const std::string& model,
                 std::uint64_t estimated,
                 std::uint64_t actual,
                 clock::time_point now);

private:
    struct bucket {
        double level;  ///< may go negative after a correction: a debt repaid by refill
        clock::time_point at;
    };
    struct state {
        model_limit limit;
        bucket requests;
        bucket tokens;
    };
    state* find(const std::string& model, clock::time_point now);

    static constexpr std::size_t max_tracked_models = 4096;

    std::mutex mutex_;
    std::map<std::string, model_limit> limits_;
    std::map<std::string, state> state_;
};

}  // namespace bgw::policy
