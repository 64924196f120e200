#include "bgw/policy/throttle.hpp"

#include "bgw/util/json.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include <rapidjson/document.h>

namespace bgw::policy {

std::string error_code(std::string_view error_type_header, std::string_view body) {
    auto after_hash = [](std::string_view s) {
        if (auto hash = s.rfind('#'); hash != std::string_view::npos) s.remove_prefix(hash + 1);
        return std::string(s);
    };
    if (!error_type_header.empty()) {
        return after_hash(error_type_header.substr(0, error_type_header.find(':')));
    }
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(body.data(), body.size()));
    if (doc.HasParseError() || !doc.IsObject()) return {};
    for (const char* key : {"__type", "code"}) {
        auto it = doc.FindMember(key);
        if (it != doc.MemberEnd() && it->value.IsString())
            return after_hash({it->value.GetString(), it->value.GetStringLength()});
    }
    return {};
}

bool is_throttling_code(std::string_view code) {
    static constexpr std::array<std::string_view, 11> codes = {
        // The list (bedrock-facts.md), ...
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        // ... the other throttling codes of botocore's retry handlers, ...
        "RequestThrottledException",
        "RequestThrottled",
        "SlowDown",
        "BandwidthLimitExceeded",
        // ... and the event-stream member name of the first (`:exception-type`).
        "throttlingException",
    };
    return std::find(codes.begin(), codes.end(), code) != codes.end();
}

outcome classify(unsigned status, std::string_view code) {
    // 509 is botocore's "limit_exceeded" retry case.
    if (status == 429 || status == 509 || is_throttling_code(code)) return outcome::throttled;
    if (code == "ModelNotReadyException") return outcome::transient;
    if (status == 500 || status == 502 || status == 503 || status == 504) return outcome::transient;
    if (status < 400) return outcome::success;
    return outcome::final;
}

milliseconds backoff_cap(int retry, milliseconds base, milliseconds max_delay) {
    if (retry < 1) return milliseconds{0};
    milliseconds cap = base;
    for (int i = 1; i < retry && cap < max_delay; ++i) cap *= 2;
    return std::min(cap, max_delay);
}

milliseconds full_jitter(int retry,
                         milliseconds base,
                         milliseconds max_delay,
                         std::mt19937_64& rng) {
    const auto cap = backoff_cap(retry, base, max_delay);
    std::uniform_int_distribution<std::int64_t> pick(0, cap.count());
    return milliseconds{pick(rng)};
}

bool retry_quota::try_acquire(bool after_timeout) {
    const int cost = after_timeout ? timeout_cost : retry_cost;
    std::lock_guard lock(mutex_);
    if (available_ < cost) return false;
    available_ -= cost;
    return true;
}

void retry_quota::on_success(int retry_cost_paid) {
    std::lock_guard lock(mutex_);
    available_ = std::min(
        capacity_, available_ + (retry_cost_paid > 0 ? retry_cost_paid : no_retry_increment));
}

int retry_quota::available() const {
    std::lock_guard lock(mutex_);
    return available_;
}

void cooldown_table::throttled(const std::string& region,
                               const std::string& model,
                               clock::time_point now,
                               milliseconds length) {
    std::lock_guard lock(mutex_);
    auto& until = until_[{region, model}];
    until = std::max(until, now + length);
    // Keep the table small: forget rests that are over.
    std::erase_if(until_, [now](const auto& entry) { return entry.second <= now; });
}

milliseconds cooldown_table::remaining(const std::string& region,
                                       const std::string& model,
                                       clock::time_point now) const {
    std::lock_guard lock(mutex_);
    auto it = until_.find({region, model});
    if (it == until_.end() || it->second <= now) return milliseconds{0};
    return std::chrono::ceil<milliseconds>(it->second - now);
}

}  // namespace bgw::policy

namespace bgw::policy {
namespace {

/// Refills a bucket holding `level` (capacity `per_minute`, last filled `at`) up to `now`, in
/// whole microseconds (the rest stays for the next refill). Fleet mode's script
/// (fleet/shared_limits.cpp) does the same operations in the same order on the Redis clock's
/// microseconds, so both decide alike.
void refill(double& level, clock::time_point& at, std::uint64_t per_minute, clock::time_point now) {
    if (now > at) {
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - at);
        const double cap = static_cast<double>(per_minute);
        level = std::min(cap, level + static_cast<double>(us.count()) * cap / 60'000'000.0);
        at += us;
    }
}

/// Time until `level` reaches `need` at `per_minute`, rounded up to the millisecond.
milliseconds time_to(double level, double need, std::uint64_t per_minute) {
    if (level >= need) return milliseconds{0};
    const double ms = (need - level) * 60'000.0 / static_cast<double>(per_minute);
    return milliseconds{static_cast<std::int64_t>(std::ceil(ms))};
}

}  // namespace

rate_limiter::state* rate_limiter::find(const std::string& model, clock::time_point now) {
    if (auto it = state_.find(model); it != state_.end()) return &it->second;
    auto lim = limits_.find(model);
    if (lim == limits_.end()) lim = limits_.find("*");
    if (lim == limits_.end()) return nullptr;
    if (state_.size() >= max_tracked_models) {
        // Model ids come from clients: forget every model whose buckets are full again (it
        // behaves exactly like one never seen), so the table cannot grow without bound.
        for (auto it = state_.begin(); it != state_.end();) {
            auto& st = it->second;
            refill(st.requests.level, st.requests.at, st.limit.rpm, now);
            refill(st.tokens.level, st.tokens.at, st.limit.tpm, now);
            const bool fresh = st.requests.level >= static_cast<double>(st.limit.rpm) &&
                               st.tokens.level >= static_cast<double>(st.limit.tpm);
            it = fresh ? state_.erase(it) : std::next(it);
        }
    }
    const auto& l = lim->second;
    auto [it, inserted] = state_.emplace(
        model, state{l, {static_cast<double>(l.rpm), now}, {static_cast<double>(l.tpm), now}});
    return &it->second;
}

rate_limiter::decision rate_limiter::try_acquire(const std::string& model,
                                                 std::uint64_t tokens,
                                                 clock::time_point now) {
    std::lock_guard lock(mutex_);
    state* s = find(model, now);
    if (!s) return {true, milliseconds{0}};
    milliseconds wait{0};
    double token_need = 0;
    if (s->limit.rpm) {
        refill(s->requests.level, s->requests.at, s->limit.rpm, now);
        wait = std::max(wait, time_to(s->requests.level, 1.0, s->limit.rpm));
    }
    if (s->limit.tpm) {
        refill(s->tokens.level, s->tokens.at, s->limit.tpm, now);
        token_need = static_cast<double>(std::min(tokens, s->limit.tpm));
        wait = std::max(wait, time_to(s->tokens.level, token_need, s->limit.tpm));
    }
    if (wait.count() > 0) return {false, wait};
    if (s->limit.rpm) s->requests.level -= 1.0;
    if (s->limit.tpm) s->tokens.level -= static_cast<double>(tokens);
    return {true, milliseconds{0}};
}

void rate_limiter::correct(const std::string& model,
                           std::uint64_t estimated,
                           std::uint64_t actual,
                           clock::time_point now) {
    std::lock_guard lock(mutex_);
    state* s = find(model, now);
    if (!s || !s->limit.tpm) return;
    refill(s->tokens.level, s->tokens.at, s->limit.tpm, now);
    s->tokens.level =
        std::min(static_cast<double>(s->limit.tpm),
                 s->tokens.level + static_cast<double>(estimated) - static_cast<double>(actual));
}

}  // namespace bgw::policy
