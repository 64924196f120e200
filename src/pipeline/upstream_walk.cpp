#include "bgw/pipeline/upstream_walk.hpp"

#include "bgw/pipeline/admit.hpp"
#include "bgw/routing/upstream_request.hpp"

#include <algorithm>
#include <utility>

namespace bgw::pipeline {

upstream_walk::upstream_walk(const walk_inputs& in, request_ctx& ctx)
    : in_(in), ctx_(ctx), model_op_(runs_model(in.rt.op)), caller_pending_(in.caller != nullptr) {
    // Token estimates, charged per target at admission and settled against usage afterwards.
    if (model_op_ && std::any_of(in.plan.targets.begin(), in.plan.targets.end(),
                                 [&](const auto& t) { return in.traffic.limits(t.model_id); }))
        estimate_ = policy::estimate_tokens(in.body);
}

step upstream_walk::next(clock::time_point now) {
    if (queued_) {
        step s = std::move(*queued_);
        queued_.reset();
        return s;
    }
    for (;;) {
        switch (phase_) {
            case phase::consulting:  // a driver's bug: consulted() was not called
                phase_ = phase::done;
                break;
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
    charge_ = model_op_ && in_.traffic.limits(t.model_id) ? estimate_ : 0;
    if (!in_.shared || std::exchange(decide_locally_, false)) return admit_locally(now);
    if (!model_op_ && !caller_pending_) {
        phase_ = phase::send;
        return std::nullopt;
    }
    // A rest this gateway already knows of costs no round trip (unless the caller's charge
    // must go to the shared state anyway).
    if (model_op_ && !caller_pending_) {
        if (auto rest = in_.traffic.resting(t.region, key_, now); rest.count() > 0)
            return refused(policy::traffic_policy::cooldown_answer(t.region, key_, rest), now);
    }
    phase_ = phase::consulting;
    return consult{ask_for(t)};
}

fleet::admission_ask upstream_walk::ask_for(const routing::target& t) const {
    const auto prefix = in_.shared->key_prefix;
    fleet::admission_ask a;
    if (caller_pending_) {
        const auto& c = *in_.caller;
        a.caller = fleet::bucket_ask{fleet::caller_key(prefix, c.name), c.limit.rpm, c.limit.tpm,
                                     c.estimate};
    }
    if (model_op_) {
        a.cooldown_key = fleet::cooldown_key(prefix, t.region, key_);
        const auto& limits = in_.shared->limits;
        auto it = limits.find(key_);
        if (it == limits.end()) it = limits.find("*");
        if (it != limits.end()) {
            a.target = fleet::bucket_ask{fleet::target_key(prefix, key_), it->second.rpm,
                                         it->second.tpm, charge_};
        }
    }
    return a;
}

void upstream_walk::consulted(const std::optional<fleet::admission_verdict>& v,
                              clock::time_point now) {
    if (phase_ != phase::consulting) return;
    phase_ = phase::admit;
    if (!v) {
        decide_locally_ = true;  // next() admits this target again, locally
        return;
    }
    const routing::target& t = in_.plan.targets[index_];
    const auto prefix = in_.shared->key_prefix;
    if (v->caller_charged && caller_pending_) {
        caller_pending_ = false;
        const auto& c = *in_.caller;
        ctx_.held.hold_caller_shared(in_.shared->ledger, fleet::caller_key(prefix, c.name),
                                     c.limit.tpm, c.estimate);
    }
    switch (v->code) {
        case fleet::admission_code::caller_over:
            phase_ = phase::done;
            final_ = answer{.throttle =
                                policy::traffic_policy::caller_answer(in_.caller->name, v->wait)};
            return;
        case fleet::admission_code::cooling:
            in_.traffic.learn_rest(t.region, key_, v->wait, now);
            queued_ =
                refused(policy::traffic_policy::cooldown_answer(t.region, key_, v->wait), now);
            return;
        case fleet::admission_code::target_over:
            queued_ = refused(policy::traffic_policy::limit_answer(key_, v->wait), now);
            return;
        case fleet::admission_code::admitted:
            if (charge_) {
                const auto& limits = in_.shared->limits;
                auto it = limits.find(key_);
                if (it == limits.end()) it = limits.find("*");
                const std::uint64_t tpm = it == limits.end() ? 0 : it->second.tpm;
                ctx_.held.hold_target_shared(in_.shared->ledger, fleet::target_key(prefix, key_),
                                             tpm, charge_);
            }
            phase_ = phase::send;
            return;
    }
}

std::optional<step> upstream_walk::admit_locally(clock::time_point now) {
    const routing::target& t = in_.plan.targets[index_];
    if (caller_pending_) {
        caller_pending_ = false;
        if (auto over = charge_locally(*in_.caller, ctx_, now)) {
            phase_ = phase::done;
            final_ = answer{.throttle = std::move(*over)};
            return *final_;
        }
    }
    if (model_op_) {
        if (auto no = in_.traffic.admit(t.region, key_, charge_, now)) return refused(*no, now);
        if (charge_) ctx_.held.hold_target(in_.traffic, t.model_id, charge_);
    }
    phase_ = phase::send;
    return std::nullopt;
}

std::optional<step> upstream_walk::refused(policy::throttle_answer no, clock::time_point now) {
    const routing::target& t = in_.plan.targets[index_];
    // The last target's rest (or refill) is waited out when the hold budget allows: the
    // request goes upstream as it ends. Earlier targets are skipped at once.
    const bool last = index_ + 1 == in_.plan.targets.size();
    if (last && no.wait <= in_.hold.left(now)) return wait{no.wait};
    skip("skipped (" + std::string(no.source) + ")");
    in_.observer.throttle(t.region, ctx_.model, "local");
    keep_shortest(std::move(no));
    ++index_;
    return std::nullopt;
}

void upstream_walk::note_rest(const routing::target& t, clock::time_point now) {
    if (!in_.shared) return;
    auto rest = in_.traffic.resting(t.region, key_, now);
    if (rest.count() > 0) rest_note_ = rest_note{t.region, key_, rest};
}

std::optional<upstream_walk::rest_note> upstream_walk::take_rest_note() {
    return std::exchange(rest_note_, std::nullopt);
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
    if (throttled) note_rest(t, now);
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
        note_rest(t, now);
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
    note_rest(in_.plan.targets[index_], now);
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
