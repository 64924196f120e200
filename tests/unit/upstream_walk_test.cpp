// The walk over a request's targets (issue 18) by table: each case scripts what upstream answers
// each attempt, drives the walk with a hand-held clock, and checks the trace of steps (send,
// wait, answer, relay), the final answer, the log's record and what the metrics were told.

#include "bgw/pipeline/upstream_walk.hpp"

#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using namespace bgw;
using namespace std::chrono_literals;
using pipeline::attempt_report;
using policy::milliseconds;
using policy::outcome;

struct counting_observer final : pipeline::walk_observer {
    std::vector<std::string> throttles;  ///< "region source"
    int failovers = 0;
    int retries = 0;
    void throttle(const std::string& region, const std::string&, std::string_view source) override {
        throttles.push_back(region + " " + std::string(source));
    }
    void failover() override { ++failovers; }
    void retry() override { ++retries; }
};

attempt_report ok() { return {}; }
attempt_report throttled(std::optional<milliseconds> hint = {}) {
    attempt_report r;
    r.outcome = outcome::throttled;
    r.upstream_hint = hint;
    r.upstream_request_id = "up-429";
    r.description = "throttled (429 ThrottlingException)";
    return r;
}
attempt_report unavailable() {
    attempt_report r;
    r.outcome = outcome::transient;
    r.description = "failed (503 ServiceUnavailableException)";
    return r;
}
attempt_report timed_out() {
    attempt_report r;
    r.outcome = outcome::transient;
    r.timed_out = true;
    r.no_answer = error{boost::beast::http::status::gateway_timeout, "GatewayTimeoutException",
                        "upstream did not answer in time (response)"};
    r.description = "response failed: timeout";
    return r;
}

routing::target on_demand(std::string region, std::string model = "m") {
    return {std::move(region), config::tier::on_demand, std::move(model), {}};
}

/// What a walk corrected in the fleet's shared state.
struct recording_ledger final : pipeline::shared_ledger {
    std::vector<std::string> corrections;  ///< "key tpm estimated->actual"
    void correct(const std::string& key,
                 std::uint64_t tpm,
                 std::uint64_t estimated,
                 std::uint64_t actual) override {
        corrections.push_back(key + " " + std::to_string(tpm) + " " + std::to_string(estimated) +
                              "->" + std::to_string(actual));
    }
};

fleet::admission_verdict says(fleet::admission_code code,
                              milliseconds wait = 0ms,
                              bool caller_charged = false) {
    return {code, wait, caller_charged};
}

/// One walk, driven to its end.
struct walk_run {
    config::retry_config retry{.max_attempts = 3,
                               .base_delay = 100ms,
                               .max_delay = 20000ms,
                               .max_hold = 1000ms,
                               .max_cooldown = 10000ms,
                               .default_timeout = 0ms};
    std::map<std::string, config::rate_limit, std::less<>> limits;
    std::optional<milliseconds> client_timeout;
    int max_attempts = 3;
    routing::plan plan;
    std::deque<attempt_report> script;  ///< upstream's answer to each send, in order

    // What happened.
    std::vector<std::string> trace;
    std::optional<pipeline::answer> answered;
    std::string relayed_region;
    std::optional<milliseconds> pause;  ///< the relayed answer's Retry-After, if the walk set one
    pipeline::request_ctx ctx;
    counting_observer seen;
    milliseconds attempt_takes{0};  ///< how long each attempt takes upstream

    // Fleet mode (issue 20): on when `fleet` is set; what the shared state answers each
    // consult, in order (nullopt: no answer in time).
    bool fleet = false;
    std::deque<std::optional<fleet::admission_verdict>> fleet_says;
    std::optional<pipeline::pending_caller> caller;
    std::vector<fleet::admission_ask> asked;
    std::vector<pipeline::upstream_walk::rest_note> rests;
    recording_ledger ledger;
    std::function<void(policy::traffic_policy&, policy::clock::time_point)> after;

    /// Runs the walk; `before` may prepare the traffic policy (cool-downs, spent limits).
    void run(const std::function<void(policy::traffic_policy&, policy::clock::time_point)>& before =
                 {}) {
        policy::traffic_policy traffic(retry, limits);
        auto now = policy::clock::time_point{} + 1h;
        if (before) before(traffic, now);
        ctx.op = "InvokeModel";
        ctx.model = "m";
        routing::runtime_request rt{
            routing::operation::invoke_model, "m", "/model/m/invoke", {}, {}};
        policy::hold_budget hold(now, retry.max_hold, client_timeout);
        std::mt19937_64 rng(7);
        const pipeline::shared_admission shared{limits, "bgw:", ledger};
        struct finally {
            std::function<void()> f;
            ~finally() { f(); }
        } at_end{[&] {
            if (after) after(traffic, now);
        }};
        pipeline::upstream_walk walk({.rt = rt,
                                      .plan = plan,
                                      .body = R"({"max_tokens": 100})",
                                      .traffic = traffic,
                                      .hold = hold,
                                      .retry = retry,
                                      .max_attempts = max_attempts,
                                      .rng = rng,
                                      .observer = seen,
                                      .shared = fleet ? &shared : nullptr,
                                      .caller = caller ? &*caller : nullptr},
                                     ctx);
        for (int guard = 0; guard < 100; ++guard) {
            auto s = walk.next(now);
            if (auto* w = std::get_if<pipeline::wait>(&s)) {
                trace.push_back("wait");
                hold.waited(now, now + w->ms);
                now += std::max(w->ms, 1ms);
                continue;
            }
            if (auto* a = std::get_if<pipeline::answer>(&s)) {
                trace.push_back(a->throttle ? "429" : std::to_string(int(a->failure->status)));
                answered = *a;
                return;
            }
            if (auto* q = std::get_if<pipeline::consult>(&s)) {
                trace.push_back("consult");
                asked.push_back(q->ask);
                ASSERT_FALSE(fleet_says.empty()) << "the walk asked more than the fleet answers";
                auto v = fleet_says.front();
                fleet_says.pop_front();
                walk.consulted(v, now);
                continue;
            }
            auto& send = std::get<pipeline::send>(s);
            trace.push_back("send " + plan.targets[send.target].region + " #" +
                            std::to_string(send.attempt));
            ASSERT_FALSE(script.empty()) << "the walk sent more than the script answers";
            auto r = script.front();
            script.pop_front();
            now += attempt_takes;
            const auto v = walk.record(r, now);
            if (auto note = walk.take_rest_note()) rests.push_back(*note);
            if (v == pipeline::verdict::relay) {
                trace.push_back("relay");
                relayed_region = walk.answered().region;
                pause = walk.pause();
                return;
            }
        }
        FAIL() << "the walk did not end";
    }
};

using trace_t = std::vector<std::string>;

TEST(upstream_walk, a_success_is_relayed_after_one_attempt) {
    walk_run w;
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {ok()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "relay"}));
    EXPECT_FALSE(w.pause);
    EXPECT_EQ(w.ctx.attempts, 1);
    EXPECT_EQ(w.ctx.region, "us-east-1");
    EXPECT_EQ(w.ctx.tier, "on-demand");
    EXPECT_TRUE(w.ctx.tried.empty());
}

TEST(upstream_walk, the_last_target_is_retried_with_backoff) {
    walk_run w;
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {unavailable(), unavailable(), ok()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "wait", "send us-east-1 #2", "wait",
                                "send us-east-1 #3", "relay"}));
    EXPECT_EQ(w.seen.retries, 2);
    EXPECT_EQ(w.ctx.attempts, 3);
}

TEST(upstream_walk, a_throttled_target_fails_over_at_once) {
    walk_run w;
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1")};
    w.script = {throttled(), ok()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "send eu-west-1 #1", "relay"}));
    EXPECT_EQ(w.relayed_region, "eu-west-1");
    EXPECT_EQ(w.seen.failovers, 1);
    EXPECT_EQ(w.seen.throttles, (trace_t{"us-east-1 upstream"}));
    EXPECT_EQ(w.ctx.upstream_throttles, 1);
    ASSERT_EQ(w.ctx.tried.size(), 1u);
    EXPECT_EQ(w.ctx.tried[0], "us-east-1 on-demand m: throttled (429 ThrottlingException)");
    EXPECT_EQ(w.ctx.region, "eu-west-1");
}

TEST(upstream_walk, target_1_throttled_target_2_transient_3_times_is_a_429_with_the_shortest_wait) {
    walk_run w;
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1")};
    w.script = {throttled(2000ms), unavailable(), unavailable(), unavailable()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "send eu-west-1 #1", "wait",
                                "send eu-west-1 #2", "wait", "send eu-west-1 #3", "429"}));
    ASSERT_TRUE(w.answered && w.answered->throttle);
    // us-east-1 rests for the 2 s it asked for, less the backoff waited meanwhile at most.
    EXPECT_LE(w.answered->throttle->wait, 2000ms);
    EXPECT_GT(w.answered->throttle->wait, 0ms);
    EXPECT_EQ(w.answered->throttle->source, "upstream");
    EXPECT_NE(w.answered->throttle->message.find("us-east-1"), std::string::npos);
    EXPECT_EQ(w.ctx.tried.size(), 2u);
}

TEST(upstream_walk, every_target_throttled_is_a_429_with_the_shortest_rest) {
    walk_run w;
    w.retry.max_hold = 0ms;  // never wait: a throttle is answered at once
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1")};
    w.script = {throttled(5000ms), throttled(1500ms)};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "send eu-west-1 #1", "429"}));
    ASSERT_TRUE(w.answered && w.answered->throttle);
    EXPECT_EQ(w.answered->throttle->wait, 1500ms);
    EXPECT_EQ(w.answered->request_id, "up-429");  // upstream's id for the last throttle
    EXPECT_EQ(w.ctx.upstream_request_id, "up-429");
    EXPECT_FALSE(w.answered->note.empty());
}

TEST(upstream_walk, a_target_over_its_local_limit_is_skipped_without_an_attempt) {
    walk_run w;
    w.limits = {{"m", {1, 0}}};
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1", "m2")};
    w.script = {ok()};
    w.run([](policy::traffic_policy& t, policy::clock::time_point now) {
        ASSERT_FALSE(t.admit("us-east-1", "m", 1, now));  // the minute's one request is spent
    });
    EXPECT_EQ(w.trace, (trace_t{"send eu-west-1 #1", "relay"}));
    ASSERT_EQ(w.ctx.tried.size(), 1u);
    EXPECT_EQ(w.ctx.tried[0], "us-east-1 on-demand m: skipped (local_limit)");
    EXPECT_EQ(w.seen.throttles, (trace_t{"us-east-1 local"}));
    EXPECT_EQ(w.ctx.attempts, 1);
}

TEST(upstream_walk, the_last_targets_short_rest_is_waited_out_within_the_hold) {
    walk_run w;
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {ok()};
    w.run([](policy::traffic_policy& t, policy::clock::time_point now) {
        t.throttled("us-east-1", "m", now, 300ms);
    });
    EXPECT_EQ(w.trace, (trace_t{"wait", "send us-east-1 #1", "relay"}));
}

TEST(upstream_walk, a_rest_longer_than_the_hold_is_answered_at_once_without_an_attempt) {
    walk_run w;
    w.plan.targets = {on_demand("us-east-1")};
    w.run([](policy::traffic_policy& t, policy::clock::time_point now) {
        t.throttled("us-east-1", "m", now, 5000ms);
    });
    EXPECT_EQ(w.trace, (trace_t{"429"}));
    EXPECT_EQ(w.answered->throttle->wait, 5000ms);
    EXPECT_EQ(w.answered->throttle->source, "cooldown");
    EXPECT_EQ(w.ctx.attempts, 0);
}

TEST(upstream_walk, transient_answers_out_of_retries_are_relayed_with_a_pause) {
    walk_run w;
    w.max_attempts = 2;
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {unavailable(), unavailable()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "wait", "send us-east-1 #2", "relay"}));
    EXPECT_EQ(w.ctx.tried.size(), 1u);
    EXPECT_TRUE(w.pause);
}

TEST(upstream_walk, no_answer_past_the_clients_deadline_says_so) {
    walk_run w;
    w.client_timeout = 10ms;  // the deadline is at most 10 ms after the start
    w.max_attempts = 1;
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {timed_out()};
    w.attempt_takes = 20ms;  // the attempt outlives the deadline
    w.run();
    ASSERT_TRUE(w.answered && w.answered->failure);
    EXPECT_EQ(w.answered->failure->status, boost::beast::http::status::gateway_timeout);
    EXPECT_NE(w.answered->failure->message.find("client's deadline"), std::string::npos)
        << w.answered->failure->message;
    EXPECT_TRUE(w.answered->pause);
}

TEST(upstream_walk, no_answer_within_the_deadline_keeps_upstreams_reason) {
    walk_run w;
    w.max_attempts = 1;
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {timed_out()};
    w.run();
    ASSERT_TRUE(w.answered && w.answered->failure);
    EXPECT_EQ(w.answered->failure->message, "upstream did not answer in time (response)");
}

TEST(upstream_walk, shape_for_target_rewrites_the_model_and_the_service_tier) {
    routing::runtime_request rt{
        routing::operation::converse, "claude", "/model/claude/converse", {}, {}};
    routing::target t{"us-east-1", config::tier::on_demand, "anthropic.claude-v2", "flex"};
    std::optional<std::string> rewritten;
    auto s = pipeline::shape_for_target(rt, t, R"({"messages":[]})", rewritten);
    EXPECT_EQ(s.rt.wire_path, "/model/anthropic.claude-v2/converse");
    ASSERT_TRUE(rewritten);
    EXPECT_EQ(s.body, *rewritten);
    EXPECT_NE(s.body.find("flex"), std::string_view::npos);
    EXPECT_TRUE(s.tier_header.empty());

    rt.op = routing::operation::invoke_model;
    rewritten.reset();
    s = pipeline::shape_for_target(rt, t, "{}", rewritten);
    EXPECT_EQ(s.rt.wire_path, "/model/anthropic.claude-v2/invoke");
    EXPECT_EQ(s.body, "{}");
    EXPECT_EQ(s.tier_header, "flex");
}

}  // namespace

// --- fleet mode (issue 20) -------------------------------------------------------------------

pipeline::pending_caller app_key(std::uint64_t rpm, std::uint64_t tpm, std::uint64_t estimate) {
    return {"app",
            {rpm, tpm},
            estimate,
            std::make_shared<policy::rate_limiter>(
                std::map<std::string, policy::model_limit>{{"app", {rpm, tpm}}})};
}

TEST(upstream_walk_fleet, one_consult_admits_the_caller_and_the_target_and_charges_both_shared) {
    walk_run w;
    w.fleet = true;
    w.limits = {{"m", {10, 1000}}};
    w.caller = app_key(5, 500, 7);
    w.plan.targets = {on_demand("us-east-1")};
    w.fleet_says = {says(fleet::admission_code::admitted, 0ms, true)};
    w.script = {ok()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"consult", "send us-east-1 #1", "relay"}));
    ASSERT_EQ(w.asked.size(), 1u);
    const auto& a = w.asked[0];
    ASSERT_TRUE(a.caller);
    EXPECT_EQ(a.caller->key, "bgw:ck:app");
    EXPECT_EQ(a.caller->rpm, 5u);
    EXPECT_EQ(a.caller->tokens, 7u);
    EXPECT_EQ(a.cooldown_key, "bgw:cd:us-east-1:m");
    ASSERT_TRUE(a.target);
    EXPECT_EQ(a.target->key, "bgw:rl:m");
    EXPECT_EQ(a.target->rpm, 10u);
    EXPECT_EQ(a.target->tpm, 1000u);
    const auto estimate = policy::estimate_tokens(R"({"max_tokens": 100})");
    EXPECT_EQ(a.target->tokens, estimate);
    // The usage, once known, corrects both shared charges; nothing local was touched.
    w.ctx.held.settle(50, policy::clock::time_point{} + 2h);
    EXPECT_EQ(w.ledger.corrections, (trace_t{"bgw:rl:m 1000 " + std::to_string(estimate) + "->50",
                                             "bgw:ck:app 500 7->50"}));
}

TEST(upstream_walk_fleet, a_fleet_cool_down_skips_the_target_and_is_kept_locally) {
    walk_run w;
    w.fleet = true;
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1")};
    w.fleet_says = {says(fleet::admission_code::cooling, 4000ms),
                    says(fleet::admission_code::admitted)};
    w.script = {ok()};
    milliseconds rest_kept{0};
    w.after = [&](policy::traffic_policy& t, policy::clock::time_point now) {
        rest_kept = t.resting("us-east-1", "m", now);
    };
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"consult", "consult", "send eu-west-1 #1", "relay"}));
    ASSERT_EQ(w.ctx.tried.size(), 1u);
    EXPECT_NE(w.ctx.tried[0].find("skipped (cooldown)"), std::string::npos) << w.ctx.tried[0];
    EXPECT_GT(rest_kept.count(), 3000);  // what the fleet said, kept (less the walk's time)
    EXPECT_EQ(w.seen.throttles, (trace_t{"us-east-1 local"}));
}

TEST(upstream_walk_fleet, the_only_target_over_the_fleet_limit_is_a_429_with_the_exact_wait) {
    walk_run w;
    w.fleet = true;
    w.limits = {{"m", {60, 0}}};
    w.plan.targets = {on_demand("us-east-1")};
    w.fleet_says = {says(fleet::admission_code::target_over, 5000ms)};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"consult", "429"}));
    ASSERT_TRUE(w.answered && w.answered->throttle);
    EXPECT_EQ(w.answered->throttle->wait, 5000ms);
    EXPECT_EQ(w.answered->throttle->source, "local_limit");
}

TEST(upstream_walk_fleet, a_caller_over_its_fleet_budget_is_a_429_and_nothing_is_sent) {
    walk_run w;
    w.fleet = true;
    w.caller = app_key(1, 0, 0);
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1")};
    w.fleet_says = {says(fleet::admission_code::caller_over, 30000ms)};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"consult", "429"}));
    ASSERT_TRUE(w.answered && w.answered->throttle);
    EXPECT_EQ(w.answered->throttle->source, "caller_limit");
    EXPECT_EQ(w.answered->throttle->wait, 30000ms);
}

TEST(upstream_walk_fleet, no_answer_from_the_fleet_is_decided_by_the_local_limits) {
    walk_run w;
    w.fleet = true;
    w.caller = app_key(1, 0, 0);
    w.limits = {{"m", {1, 0}}};
    w.plan.targets = {on_demand("us-east-1")};
    w.fleet_says = {std::nullopt};
    // The caller's local share is spent already: the local decision refuses it.
    w.caller->local->try_acquire("app", 0, policy::clock::time_point{} + 1h);
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"consult", "429"}));
    ASSERT_TRUE(w.answered && w.answered->throttle);
    EXPECT_EQ(w.answered->throttle->source, "caller_limit");
    EXPECT_TRUE(w.ledger.corrections.empty());
}

TEST(upstream_walk_fleet, no_answer_from_the_fleet_admits_within_the_local_limits) {
    walk_run w;
    w.fleet = true;
    w.limits = {{"m", {1, 0}}};
    w.plan.targets = {on_demand("us-east-1")};
    w.fleet_says = {std::nullopt};
    w.script = {ok()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"consult", "send us-east-1 #1", "relay"}));
}

TEST(upstream_walk_fleet, a_throttle_upstream_leaves_a_rest_for_the_fleet_to_hear_of) {
    walk_run w;
    w.fleet = true;
    w.plan.targets = {on_demand("us-east-1"), on_demand("eu-west-1")};
    w.fleet_says = {says(fleet::admission_code::admitted), says(fleet::admission_code::admitted)};
    w.script = {throttled(2000ms), ok()};
    w.run();
    EXPECT_EQ(w.trace,
              (trace_t{"consult", "send us-east-1 #1", "consult", "send eu-west-1 #1", "relay"}));
    ASSERT_EQ(w.rests.size(), 1u);
    EXPECT_EQ(w.rests[0].region, "us-east-1");
    EXPECT_EQ(w.rests[0].model, "m");
    EXPECT_EQ(w.rests[0].rest, 2000ms);
}

TEST(upstream_walk_fleet, a_rest_known_locally_costs_no_consult_until_it_ends) {
    walk_run w;
    w.fleet = true;
    w.plan.targets = {on_demand("us-east-1")};
    w.fleet_says = {says(fleet::admission_code::admitted)};
    w.script = {ok()};
    w.run([](policy::traffic_policy& t, policy::clock::time_point now) {
        t.learn_rest("us-east-1", "m", 500ms, now);
    });
    EXPECT_EQ(w.trace, (trace_t{"wait", "consult", "send us-east-1 #1", "relay"}));
}

TEST(upstream_walk_fleet, without_fleet_mode_nothing_is_consulted) {
    walk_run w;
    w.limits = {{"m", {10, 0}}};
    w.plan.targets = {on_demand("us-east-1")};
    w.script = {ok()};
    w.run();
    EXPECT_EQ(w.trace, (trace_t{"send us-east-1 #1", "relay"}));
    EXPECT_TRUE(w.asked.empty());
}
