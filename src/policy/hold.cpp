#include "bgw/policy/hold.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>

namespace bgw::policy {
namespace {

std::optional<std::uint64_t> decimal(std::string_view s) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return v;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// `max=N` out of `attempt=1; max=3` (the AWS SDKs' amz-sdk-request); nullopt without one.
std::optional<std::uint64_t> sdk_max_attempts(std::string_view header) {
    while (!header.empty()) {
        const auto semi = header.find(';');
        auto part = trim(header.substr(0, semi));
        if (part.starts_with("max=")) return decimal(part.substr(4));
        if (semi == std::string_view::npos) break;
        header.remove_prefix(semi + 1);
    }
    return std::nullopt;
}

constexpr std::uint64_t max_timeout_ms = 86'400'000;
constexpr milliseconds max_margin{500};

}  // namespace

result<client_terms> read_client_terms(const client_headers& h, const config::retry_config& cfg) {
    client_terms t;
    if (!h.max_attempts.empty()) {
        auto n = decimal(trim(h.max_attempts));
        if (!n || *n < 1 || *n > 10) {
            return validation_error(
                "X-Gateway-Max-Attempts must be a whole number of attempts from 1 to 10");
        }
        t.max_attempts = std::min(static_cast<int>(*n), cfg.max_attempts);
        t.attempts_from = "header";
    } else if (auto m = sdk_max_attempts(h.amz_sdk_request);
               (m && *m > 1) || !h.stainless_retry_count.empty()) {
        // The SDK retries on its own: one attempt here per attempt there, or the two multiply.
        t.max_attempts = 1;
        t.attempts_from = "client_retries";
    } else {
        t.max_attempts = cfg.max_attempts;
        t.attempts_from = "config";
    }
    auto shortest = [&](milliseconds v) {
        if (!t.timeout || v < *t.timeout) t.timeout = v;
    };
    if (!h.timeout_ms.empty()) {
        auto n = decimal(trim(h.timeout_ms));
        if (!n || *n < 1 || *n > max_timeout_ms) {
            return validation_error(
                "X-Gateway-Timeout-Ms must be a whole number of milliseconds from 1 to " +
                std::to_string(max_timeout_ms));
        }
        shortest(milliseconds(*n));
    }
    // Not ours to refuse: a value we cannot read is ignored.
    if (auto s = decimal(trim(h.stainless_timeout)); s && *s > 0 && *s <= max_timeout_ms / 1000)
        shortest(milliseconds(*s * 1000));
    if (cfg.default_timeout.count() > 0) shortest(cfg.default_timeout);
    return t;
}

hold_budget::hold_budget(clock::time_point start,
                         milliseconds max_hold,
                         std::optional<milliseconds> timeout)
    : max_hold_(max_hold) {
    if (timeout) deadline_ = start + *timeout - std::min(*timeout / 5, max_margin);
}

milliseconds hold_budget::left(clock::time_point now) const {
    auto left = std::max(milliseconds{0}, max_hold_ - held_);
    if (deadline_) {
        left = std::min(
            left, std::max(milliseconds{0}, std::chrono::floor<milliseconds>(*deadline_ - now)));
    }
    return left;
}

void hold_budget::waited(clock::time_point from, clock::time_point to) {
    if (to > from) held_ += std::chrono::ceil<milliseconds>(to - from);
}

milliseconds hold_budget::attempt_bound(milliseconds bound, clock::time_point now) const {
    if (!deadline_) return bound;
    const auto until = std::chrono::floor<milliseconds>(*deadline_ - now);
    return std::max(milliseconds{1}, std::min(bound, until));
}

milliseconds cooldown_length(int streak,
                             std::optional<milliseconds> upstream_hint,
                             const config::retry_config& cfg) {
    if (upstream_hint) return std::clamp(*upstream_hint, milliseconds{1}, cfg.max_cooldown);
    return backoff_cap(std::max(streak, 1), cfg.base_delay, cfg.max_cooldown);
}

std::optional<milliseconds> upstream_retry_after(std::string_view retry_after_ms,
                                                 std::string_view x_amz_retry_after,
                                                 std::string_view retry_after) {
    // A day is far beyond any cap; larger values are not worth the overflow checks.
    constexpr std::uint64_t day_ms = 86'400'000;
    for (auto v : {retry_after_ms, x_amz_retry_after}) {
        if (auto n = decimal(trim(v)); n && *n <= day_ms) return milliseconds(*n);
    }
    if (auto n = decimal(trim(retry_after)); n && *n <= day_ms / 1000)
        return milliseconds(*n * 1000);
    return std::nullopt;
}

retry_decision decide_retry(int attempt,
                            int max_attempts,
                            milliseconds rest,
                            milliseconds jitter,
                            milliseconds hold_left,
                            bool deadline_passed) {
    if (attempt >= max_attempts) return {stop_reason::attempts, milliseconds{0}};
    if (deadline_passed) return {stop_reason::deadline, milliseconds{0}};
    // The jitter only spreads retries out; it never by itself turns a retry into a refusal.
    const auto wait = std::max(std::min(jitter, hold_left), rest);
    if (wait > hold_left) return {stop_reason::hold, milliseconds{0}};
    return {stop_reason::none, wait};
}

milliseconds transient_pause(int attempts, const config::retry_config& cfg) {
    return backoff_cap(std::max(attempts, 1), cfg.base_delay, cfg.max_delay);
}

}  // namespace bgw::policy
