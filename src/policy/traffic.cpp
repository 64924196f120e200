#include "bgw/policy/traffic.hpp"

#include "bgw/util/json.hpp"

#include <algorithm>
#include <charconv>

#include <rapidjson/document.h>

namespace bgw::policy {
namespace {

/// Beyond this many (region, model) streaks, forget the ones no longer resting.
constexpr std::size_t max_streaks = 4096;

std::optional<std::uint64_t> number(const rapidjson::Value& obj, const char* key) {
    if (!obj.IsObject()) return std::nullopt;
    auto it = obj.FindMember(key);
    if (it == obj.MemberEnd() || !it->value.IsUint64()) return std::nullopt;
    return it->value.GetUint64();
}

std::optional<std::uint64_t> nested(const rapidjson::Value& obj,
                                    const char* outer,
                                    const char* key) {
    if (!obj.IsObject()) return std::nullopt;
    auto it = obj.FindMember(outer);
    if (it == obj.MemberEnd()) return std::nullopt;
    return number(it->value, key);
}

std::optional<std::uint64_t> decimal(std::string_view s) {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
    return v;
}

}  // namespace

std::uint64_t estimate_tokens(std::string_view body) {
    const std::uint64_t input = (body.size() + 3) / 4;
    std::uint64_t output = 0;
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(body.data(), body.size()));
    if (!doc.HasParseError() && doc.IsObject()) {
        // The output cap as each model family spells it; Bedrock charges it up front as well.
        for (auto v : {number(doc, "max_tokens"), nested(doc, "inferenceConfig", "maxTokens"),
                       number(doc, "max_tokens_to_sample"), number(doc, "max_gen_len"),
                       nested(doc, "textGenerationConfig", "maxTokenCount")}) {
            if (v) {
                output = *v;
                break;
            }
        }
    }
    return std::max<std::uint64_t>(1, input + output);
}

std::optional<usage> usage_from_headers(std::string_view input, std::string_view output) {
    auto in = decimal(input);
    auto out = decimal(output);
    if (!in || !out) return std::nullopt;
    return usage{*in, *out};
}

std::optional<usage> usage_from_converse_body(std::string_view body) {
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(body.data(), body.size()));
    if (doc.HasParseError()) return std::nullopt;
    auto in = nested(doc, "usage", "inputTokens");
    auto out = nested(doc, "usage", "outputTokens");
    if (!in || !out) return std::nullopt;
    return usage{*in, *out};
}

std::optional<usage> usage_from_model_output(std::string_view body) {
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(body.data(), body.size()));
    if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
    // Converse; Anthropic messages; Meta Llama; Amazon Titan text (its first result).
    auto in = nested(doc, "usage", "inputTokens");
    auto out = nested(doc, "usage", "outputTokens");
    if (!in || !out) {
        in = nested(doc, "usage", "input_tokens");
        out = nested(doc, "usage", "output_tokens");
    }
    if (!in || !out) {
        in = number(doc, "prompt_token_count");
        out = number(doc, "generation_token_count");
    }
    if (!in || !out) {
        in = number(doc, "inputTextTokenCount");
        out.reset();
        auto results = doc.FindMember("results");
        if (results != doc.MemberEnd() && results->value.IsArray() && !results->value.Empty() &&
            results->value[0].IsObject())
            out = number(results->value[0], "tokenCount");
    }
    if (!in || !out) return std::nullopt;
    return usage{*in, *out};
}

std::shared_ptr<const traffic_policy::settings> traffic_policy::make_settings(
    const config::retry_config& retry,
    const std::map<std::string, config::rate_limit, std::less<>>& limits) {
    std::map<std::string, model_limit> m;
    for (const auto& [model, l] : limits) m.emplace(model, model_limit{l.rpm, l.tpm});
    return std::make_shared<const settings>(
        settings{retry, limits, std::make_shared<rate_limiter>(std::move(m))});
}

traffic_policy::traffic_policy(const config::retry_config& retry,
                               const std::map<std::string, config::rate_limit, std::less<>>& limits,
                               int retry_budget)
    : settings_(make_settings(retry, limits)), quota_(retry_budget) {}

void traffic_policy::reconfigure(
    const config::retry_config& retry,
    const std::map<std::string, config::rate_limit, std::less<>>& limits) {
    auto old = settings_.load();
    if (old->limits == limits) {
        settings_.store(std::make_shared<const settings>(settings{retry, limits, old->limiter}));
    } else {
        settings_.store(make_settings(retry, limits));
    }
}

bool traffic_policy::limits(std::string_view model) const {
    auto s = settings_.load();
    return s->limits.contains(model) || s->limits.contains("*");
}

std::optional<throttle_answer> traffic_policy::admit(const std::string& region,
                                                     const std::string& model,
                                                     std::uint64_t estimated_tokens,
                                                     clock::time_point now) {
    if (auto rest = rests_.remaining(region, model, now); rest.count() > 0)
        return cooldown_answer(region, model, rest);
    auto s = settings_.load();
    if (!s->limits.contains(model) && !s->limits.contains("*")) return std::nullopt;
    auto d = s->limiter->try_acquire(model, estimated_tokens, now);
    if (d.allowed) return std::nullopt;
    return limit_answer(model, d.wait);
}

throttle_answer traffic_policy::cooldown_answer(const std::string& region,
                                                const std::string& model,
                                                milliseconds rest) {
    return {rest,
            "upstream throttled " + model + " in " + region +
                " moments ago; the gateway holds requests back until the cool-down ends",
            "cooldown"};
}

throttle_answer traffic_policy::limit_answer(const std::string& model, milliseconds wait) {
    return {wait,
            "local rate limit for " + model +
                " (rate_limits: requests or tokens per minute) reached; not sent upstream",
            "local_limit"};
}

throttle_answer traffic_policy::caller_answer(std::string_view caller, milliseconds wait) {
    return {wait,
            "caller key " + std::string(caller) +
                " is over its own rpm/tpm (caller_keys); not sent upstream",
            "caller_limit"};
}

void traffic_policy::learn_rest(const std::string& region,
                                const std::string& model,
                                milliseconds rest,
                                clock::time_point now) {
    if (rest.count() > 0) rests_.throttled(region, model, now, rest);
}

milliseconds traffic_policy::cool_down(const std::string& region,
                                       const std::string& model,
                                       clock::time_point now,
                                       std::optional<milliseconds> upstream_hint) {
    const auto retry = settings_.load()->retry;
    // One lock over the look and the change: two throttles at the same moment must not both
    // see "not resting" and escalate twice.
    std::lock_guard lock(mutex_);
    if (streaks_.size() >= max_streaks) {
        std::erase_if(streaks_, [&](const auto& e) {
            return rests_.remaining(e.first.first, e.first.second, now).count() == 0;
        });
    }
    int& streak = streaks_[{region, model}];
    const bool resting = rests_.remaining(region, model, now).count() > 0;
    // Answers to requests sent before the rest began say nothing new: they neither escalate nor
    // extend it, so the wait the first 429 advertised stays true. Only upstream's own
    // Retry-After may move the end of a rest.
    if (streak == 0 || !resting) ++streak;
    if (!resting || upstream_hint)
        rests_.throttled(region, model, now, cooldown_length(streak, upstream_hint, retry));
    return rests_.remaining(region, model, now);
}

traffic_policy::step traffic_policy::after_failure(const failed_attempt& f,
                                                   clock::time_point now,
                                                   std::mt19937_64& rng,
                                                   const request_bounds& bounds) {
    const int attempt = f.attempt;
    milliseconds rest{0};
    if (f.o == outcome::throttled) rest = cool_down(f.region, f.model, now, bounds.upstream_hint);
    const auto retry = settings_.load()->retry;
    const int max_attempts = bounds.max_attempts.value_or(retry.max_attempts);
    const auto hold_left = bounds.hold_left.value_or(milliseconds::max());
    const auto d = decide_retry(attempt, max_attempts, rest,
                                full_jitter(attempt, retry.base_delay, retry.max_delay, rng),
                                hold_left, bounds.deadline_passed);
    if (d.stop == stop_reason::attempts) {
        return {false, milliseconds{0}, 0,
                (bounds.max_attempts ? "attempts for this request (" : "retry.max_attempts (") +
                    std::to_string(max_attempts) + ") reached"};
    }
    if (d.stop == stop_reason::deadline) {
        return {false, milliseconds{0}, 0, "the client's deadline has passed"};
    }
    if (d.stop == stop_reason::hold) {
        return {false, milliseconds{0}, 0,
                "next attempt in " + std::to_string(rest.count()) +
                    " ms is beyond the hold budget left (" + std::to_string(hold_left.count()) +
                    " ms)"};
    }
    if (!quota_.try_acquire(f.timed_out))
        return {false, milliseconds{0}, 0, "retry budget spent (too many failures recently)"};
    return {true, d.wait, f.timed_out ? retry_quota::timeout_cost : retry_quota::retry_cost, {}};
}

throttle_answer traffic_policy::final_throttle(int attempts,
                                               const std::string& region,
                                               const std::string& model,
                                               clock::time_point now) const {
    auto rest = rests_.remaining(region, model, now);
    if (rest.count() == 0) rest = transient_pause(attempts, settings_.load()->retry);
    return {std::max(rest, milliseconds{1}),
            "upstream (Bedrock) throttled " + model + " in " + region + "; retry after the wait",
            "upstream"};
}

void traffic_policy::succeeded(const std::string& region,
                               const std::string& model,
                               int last_retry_cost) {
    quota_.on_success(last_retry_cost);
    std::lock_guard lock(mutex_);
    streaks_.erase({region, model});
}

milliseconds traffic_policy::throttled(const std::string& region,
                                       const std::string& model,
                                       clock::time_point now,
                                       std::optional<milliseconds> upstream_hint) {
    return cool_down(region, model, now, upstream_hint);
}

void traffic_policy::settle(const std::string& model,
                            std::uint64_t estimated,
                            std::uint64_t actual,
                            clock::time_point now) {
    auto s = settings_.load();
    if (s->limits.contains(model) || s->limits.contains("*"))
        s->limiter->correct(model, estimated, actual, now);
}

}  // namespace bgw::policy
