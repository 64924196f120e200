#pragma once
/// How long one request may wait inside the gateway, and how many upstream attempts it gets
/// (issue 17), as plain functions over values: every call takes `now`.
///
///   read_client_terms()  what the request says about its client: an explicit attempt count
///                        (`X-Gateway-Max-Attempts`), whether its SDK retries on its own
///                        (`amz-sdk-request`, `X-Stainless-Retry-Count`), and how long it will
///                        wait (`X-Gateway-Timeout-Ms`, `X-Stainless-Timeout`, else
///                        retry.default_timeout_ms);
///   hold_budget          the request's allowance for waiting (retry.max_hold_ms), never past
///                        the client's deadline;
///   cooldown_length()    how long a (region, model) rests after a throttle;
///   decide_retry()       retry now-ish, or answer at once, given the next possible attempt.
///
/// The rule against multiplication: an SDK that retries by itself gets one gateway attempt per
/// SDK attempt, so through the gateway it causes no more upstream calls than straight to
/// Bedrock; the answer it gets says when to come back (the cool-down), and it is true.

#include "bgw/config/config.hpp"
#include "bgw/error.hpp"
#include "bgw/policy/throttle.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace bgw::policy {

/// The request headers read_client_terms() looks at (empty when absent).
struct client_headers {
    std::string_view max_attempts;           ///< `X-Gateway-Max-Attempts`: 1-10
    std::string_view timeout_ms;             ///< `X-Gateway-Timeout-Ms`: 1-86400000
    std::string_view amz_sdk_request;        ///< AWS SDKs: `attempt=1; max=3`
    std::string_view stainless_retry_count;  ///< Anthropic/OpenAI SDKs: `0`, `1`, ...
    std::string_view stainless_timeout;      ///< the same SDKs' timeout, whole seconds
};

/// What one request gets from the gateway.
struct client_terms {
    int max_attempts = 1;                 ///< gateway attempts at the last target, first included
    std::string_view attempts_from;       ///< "header", "client_retries" or "config" (for logs)
    std::optional<milliseconds> timeout;  ///< the client's patience, from the request's start
};

/// Reads the headers against the config: `X-Gateway-Max-Attempts` wins (bounded by
/// retry.max_attempts); otherwise a client whose SDK retries by itself (`amz-sdk-request` with
/// max above 1, or any `X-Stainless-Retry-Count`) gets one attempt; otherwise
/// retry.max_attempts. The timeout is the shortest of `X-Gateway-Timeout-Ms`,
/// `X-Stainless-Timeout` (if positive) and retry.default_timeout_ms (if set).
/// Errors: 400 ValidationException naming the header, for a malformed or out-of-range
/// `X-Gateway-Max-Attempts` or `X-Gateway-Timeout-Ms` (the SDKs' own headers are never refused).
result<client_terms> read_client_terms(const client_headers& h, const config::retry_config& cfg);

/// The waiting allowance of one request: at most `max_hold` of waits in all, and none past the
/// deadline. The deadline is the client's timeout counted from `start`, less a margin (a fifth
/// of it, at most 500 ms) so the gateway's answer reaches the client before it gives up.
class hold_budget {
public:
    hold_budget(clock::time_point start,
                milliseconds max_hold,
                std::optional<milliseconds> timeout);

    /// What may still be waited at `now`.
    milliseconds left(clock::time_point now) const;
    /// Records a wait that ran from `from` to `to`.
    void waited(clock::time_point from, clock::time_point to);
    /// Bounds one upstream attempt (connect, or waiting for the head): `bound`, or less when the
    /// deadline is nearer (never below 1 ms, so an attempt can still fail as a timeout).
    milliseconds attempt_bound(milliseconds bound, clock::time_point now) const;
    /// True once the deadline has passed.
    bool expired(clock::time_point now) const { return deadline_ && now >= *deadline_; }
    bool has_deadline() const { return deadline_.has_value(); }
    milliseconds held() const { return held_; }

private:
    milliseconds max_hold_;
    milliseconds held_{0};
    std::optional<clock::time_point> deadline_;
};

/// How long a (region, model) rests after its `streak`-th consecutive throttle: upstream's own
/// wait when it gave one (at least 1 ms), else base_delay doubling per throttle; either way at
/// most retry.max_cooldown_ms.
milliseconds cooldown_length(int streak,
                             std::optional<milliseconds> upstream_hint,
                             const config::retry_config& cfg);

/// Upstream's own "come back in": `retry-after-ms` or `x-amz-retry-after` (milliseconds), else
/// `Retry-After` in delta-seconds (an HTTP-date is not used). nullopt when none parses.
std::optional<milliseconds> upstream_retry_after(std::string_view retry_after_ms,
                                                 std::string_view x_amz_retry_after,
                                                 std::string_view retry_after);

/// Why a request stops retrying inside the gateway.
enum class stop_reason { none, attempts, hold, deadline };

/// The next step after a failed attempt, before the retry budget is asked.
struct retry_decision {
    stop_reason stop;
    milliseconds wait;  ///< before the next attempt (when not stopping)
};

/// Attempt `attempt` of `max_attempts` failed; the target rests for `rest` more (0 unless it was
/// throttled) and the backoff drew `jitter`. The next attempt can start after
/// max(min(jitter, hold_left), rest): when that is beyond `hold_left`, stop (answer now). Past
/// the client's deadline (`deadline_passed`) there is no next attempt: it could not be answered
/// in time.
retry_decision decide_retry(int attempt,
                            int max_attempts,
                            milliseconds rest,
                            milliseconds jitter,
                            milliseconds hold_left,
                            bool deadline_passed = false);

/// The pause a final 5xx or timeout suggests, so an SDK's retry does not follow at once: the
/// next backoff cap after `attempts` attempts.
milliseconds transient_pause(int attempts, const config::retry_config& cfg);

}  // namespace bgw::policy
