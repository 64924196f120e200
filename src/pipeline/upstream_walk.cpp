#include "bgw/pipeline/upstream_walk.hpp"

#include "bgw/pipeline/admit.hpp"
#include "bgw/routing/upstream_request.hpp"

#include <algorithm>
#include <utility>

namespace bgw::pipeline {

upstream_walk::upstream_walk(const walk_inputs& in, request_ctx& ctx)
    : in_(in), ctx_(ctx), model_op_(runs_model(in.rt.op)) {
    // Token estimates, charged per target at admission and settled against usage afterwards.
    if (model_op_ && std::any_of(in.plan.targets.begin(), in.plan.targets.end(),
                                 [&](const auto& t) { return in.traffic.limits(t.model_id); }))
        estimate_ = policy::estimate_tokens(in.body);
}

step upstream_walk::next(clock::time_point now) {
    for (;;) {
        switch (phase_) {
            case phase::done:
                if (!final_) final_ = answer{.failure = error{}};  // a driver's bug, not a state
                return *final_;
            case phase::wait_then_send:
                phase_ = phase::send;
                return wait{wait_};
            case phase::send:
                ++attempt_;
                ++ctx_.attempts;
                return send{index_, attempt_};
            case phase::admit:
                if (index_ == in_.plan.targets.size()) return no_target_left();
                if (auto s = admit_target(now)) return *s;
                break;  // skipped, or admitted: the loop says what next
        }
    }
}

void upstream_walk::enter(std::size_t i) {
    const routing::target& t = in_.plan.targets[i];
    key_ = t.model_id.empty() ? std::string(ctx_.op) : t.model_id;
    ctx_.region = t.region;
    ctx_.target_model = t.model_id;
    ctx_.tier = config::tier_name(t.tier);
}

std::optional<step> upstream_walk::admit_target(clock::time_point now) {
    enter(index_);
    const routing::target& t = in_.plan.targets[index_];
    attempt_ = 0;
    if (model_op_) {
        const std::uint64_t charge = in_.traffic.limits(t.model_id) ? estimate_ : 0;
        auto no = in_.traffic.admit(t.region, key_, charge, now);
        // The last target's rest (or refill) is waited out when the hold budget allows: the
        // request goes upstream as it ends. Earlier targets are skipped at once.
        const bool last = index_ + 1 == in_.plan.targets.size();
        if (no && last && no->wait <= in_.hold.left(now)) return wait{no->wait};
        if (no) {
            skip("skipped (" + std::string(no->source) + ")");
            in_.observer.throttle(t.region, ctx_.model, "local");
            keep_shortest(std::move(*no));
            ++index_;
            return std::nullopt;
        }
        if (charge) ctx_.held.hold_target(in_.traffic, t.model_id, charge);
    }
    phase_ = phase::send;
    return std::nullopt;
}

void upstream_walk::skip(std::string_view why) {
    const routing::target& t = in_.plan.targets[index_];
    ctx_.tried.push_back(t.region + " " + std::string(ctx_.tier) + " " + key_ + ": " +
                         std::string(why));
}

void upstream_walk::keep_shortest(policy::throttle_answer a) {
    if (!held_ || a.wait < held_->wait) held_ = std::move(a);
}

verdict upstream_walk::record(const attempt_report& r, clock::time_point now) {
    if (r.outcome == policy::outcome::success || r.outcome == policy::outcome::final) {
        phase_ = phase::done;
        return verdict::relay;  // relay this answer, whatever it says
    }
    const routing::target& t = in_.plan.targets[index_];
    const bool throttled = r.outcome == policy::outcome::throttled;
    if (throttled) {
        ++ctx_.upstream_throttles;
        in_.observer.throttle(t.region, ctx_.model, "upstream");
    }
    if (index_ + 1 < in_.plan.targets.size()) return leave_target(r, throttled, now);
    auto s = in_.traffic.after_failure(
        {attempt_, r.outcome, r.timed_out, t.region, key_}, now, in_.rng,
        {in_.max_attempts, in_.hold.left(now), r.upstream_hint, in_.hold.expired(now)});
    if (!s.retry) return stop_here(r, throttled, s, now);
    last_retry_cost_ = s.cost;
    in_.observer.retry();
    wait_ = s.wait;
    phase_ = phase::wait_then_send;
    return verdict::next;
}

verdict upstream_walk::leave_target(const attempt_report& r,
                                    bool throttled,
                                    clock::time_point now) {
    const routing::target& t = in_.plan.targets[index_];
    if (throttled) {
        // If nothing after it can be tried, its rest is a candidate answer.
        auto rest = in_.traffic.throttled(t.region, key_, now, r.upstream_hint);
        keep_shortest(
            {rest, "upstream (Bedrock) throttled " + key_ + " in " + t.region, "upstream"});
    }
    skip(r.description);
    ctx_.held.settle(0, now);
    in_.observer.failover();
    ++index_;
    phase_ = phase::admit;  // on to the next target, at once
    return verdict::next;
}

verdict upstream_walk::stop_here(const attempt_report& r,
                                 bool throttled,
                                 const policy::traffic_policy::step& s,
                                 clock::time_point now) {
    const routing::target& t = in_.plan.targets[index_];
    skip(r.description);
    ctx_.held.settle(0, now);
    phase_ = phase::done;
    if (throttled) {
        auto a = in_.traffic.final_throttle(attempt_, t.region, key_, now);
        // Another target may be free sooner.
        if (held_ && held_->wait < a.wait) a.wait = held_->wait;
        ctx_.upstream_request_id = r.upstream_request_id;
        final_ = answer{.throttle = std::move(a),
                        .request_id = r.upstream_request_id,
                        .note = " (" + s.why + ")"};
        return verdict::next;
    }
    if (held_) {
        // An earlier target was throttled (or skipped on a limit) and the last one is failing:
        // the client's best next try is when that target frees, so the answer is its 429.
        final_ = answer{.throttle = *held_, .note = " (then " + r.description + ")"};
        return verdict::next;
    }
    // Out of attempts here: the client's own retry should not follow at once.
    pause_ = policy::transient_pause(attempt_, in_.retry);
    if (r.no_answer) {
        error failure = *r.no_answer;
        if (r.timed_out && in_.hold.expired(now)) {
            failure.message =
                "upstream did not answer within the client's deadline (X-Gateway-Timeout-Ms, "
                "X-Stainless-Timeout or retry.default_timeout_ms)";
        }
        final_ = answer{.failure = std::move(failure), .pause = pause_};
        return verdict::next;
    }
    return verdict::relay;  // a transient error answer, out of retries: relayed as it came
}

step upstream_walk::no_target_left() {
    // Every target left was cooling down or over its local limits (the last one always is: any
    // other way out of the last target answers or relays).
    if (!held_)
        held_ = policy::throttle_answer{std::chrono::seconds{1}, "no target available", "cooldown"};
    phase_ = phase::done;
    final_ = answer{.throttle = *held_};
    return *final_;
}

void upstream_walk::relayed(unsigned status) {
    if (status < 400) in_.traffic.succeeded(ctx_.region, key_, last_retry_cost_);
}

void upstream_walk::stream_throttled(clock::time_point now) {
    in_.traffic.throttled(ctx_.region, key_, now);
}

shaped_request shape_for_target(const routing::runtime_request& rt,
                                const routing::target& t,
                                std::string_view body,
                                std::optional<std::string>& rewritten) {
    shaped_request out{rt, body, {}};
    const bool model_op = runs_model(rt.op);
    if (model_op && t.model_id != rt.model_id)
        out.rt.wire_path = routing::model_wire_path(rt.op, t.model_id);
    if (t.service_tier.empty()) return out;
    if (rt.op == routing::operation::converse || rt.op == routing::operation::converse_stream) {
        rewritten = routing::with_converse_service_tier(body, t.service_tier);
        if (rewritten) out.body = *rewritten;
    } else if (model_op) {
        out.tier_header = t.service_tier;
    }
    return out;
}

}  // namespace bgw::pipeline
