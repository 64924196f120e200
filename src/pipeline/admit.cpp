#include "bgw/pipeline/admit.hpp"

#include <string>

namespace bgw::pipeline {

namespace http = boost::beast::http;

bool runs_model(routing::operation op) {
    using routing::operation;
    return op == operation::invoke_model || op == operation::invoke_model_with_response_stream ||
           op == operation::converse || op == operation::converse_stream;
}

namespace {

/// Event streams hold a connection upstream for minutes: their number is bounded.
result<stream_slot> take_stream_slot(routing::operation op, admission_state& state) {
    if (op != routing::operation::converse_stream &&
        op != routing::operation::invoke_model_with_response_stream)
        return stream_slot{};
    if (++state.streams > state.cfg.limits.max_streams) {
        --state.streams;
        return error{http::status::service_unavailable, "ServiceUnavailableException",
                     "the gateway already relays limits.max_streams (" +
                         std::to_string(state.cfg.limits.max_streams) +
                         ") event streams; retry shortly"};
    }
    return stream_slot{state.streams};
}

/// Where and how: an ordered list of targets in the regions the caller key may use, or a
/// refusal that never reaches upstream.
result<routing::plan> plan_for(const http::request<http::string_body>& req,
                               const routing::runtime_request& rt,
                               const policy::caller& who,
                               const config::config& cfg,
                               request_ctx& ctx) {
    auto plan = routing::route(rt,
                               {req["X-Gateway-Region"], rt.region_prefix,
                                req[http::field::authorization], req["X-Gateway-Tier"]},
                               cfg);
    if (!plan) return plan.error();
    ctx.route = plan->route;
    // A key bound to some regions only ever runs there; the route's other targets drop out.
    std::erase_if(plan->targets,
                  [&](const routing::target& t) { return !policy::region_allowed(who, t.region); });
    if (plan->targets.empty()) {
        return error{http::status::forbidden, "AccessDeniedException",
                     "caller key " + std::string(who.name) +
                         " may not run requests in the regions this one would use"};
    }
    return plan;
}

/// The key's own requests and tokens per minute, before any target is tried: charged now, or
/// in fleet mode left in `pending` for the shared state.
std::optional<policy::throttle_answer> charge_caller(const http::request<http::string_body>& req,
                                                     routing::operation op,
                                                     const policy::caller& who,
                                                     admission_state& state,
                                                     request_ctx& ctx,
                                                     std::optional<pending_caller>& pending) {
    if (!who.key || (!who.key->limit.rpm && !who.key->limit.tpm)) return std::nullopt;
    std::uint64_t estimate = 0;
    if (who.key->limit.tpm && runs_model(op)) estimate = policy::estimate_tokens(req.body());
    pending_caller c{std::string(who.name), who.key->limit, estimate, state.caller_limits};
    if (state.shared) {
        pending = std::move(c);
        return std::nullopt;
    }
    return charge_locally(c, ctx, clock::now());
}

}  // namespace

std::optional<policy::throttle_answer> charge_locally(const pending_caller& c,
                                                      request_ctx& ctx,
                                                      clock::time_point now) {
    auto d = c.local->try_acquire(c.name, c.estimate, now);
    if (!d.allowed) return policy::traffic_policy::caller_answer(c.name, d.wait);
    ctx.held.hold_caller(c.local, c.name, c.estimate);
    return std::nullopt;
}

std::variant<admitted, refusal> admit(const http::request<http::string_body>& req,
                                      const policy::caller& who,
                                      admission_state& state,
                                      request_ctx& ctx) {
    auto rt = routing::parse_runtime_target(req.method(), req.target());
    if (!rt) return rt.error();
    ctx.op = routing::operation_name(rt->op);
    ctx.model = rt->model_id;
    if (auto allowed = policy::authorize_model(who, rt->model_id); !allowed) return allowed.error();
    auto slot = take_stream_slot(rt->op, state);
    if (!slot) return slot.error();
    // A snapshot: a background refresh never changes the keys under a request in flight.
    std::shared_ptr<const aws::timed_credentials> signing;
    if (!state.bearer) {
        if (!*state.signing) return state.signing->error();
        signing = **state.signing;
    }
    auto plan = plan_for(req, *rt, who, state.cfg, ctx);
    if (!plan) return plan.error();
    // The client's own retries and patience (issue 17): the gateway's attempts for it, and
    // the deadline no wait inside the gateway outlives.
    auto terms = policy::read_client_terms(
        {req["X-Gateway-Max-Attempts"], req["X-Gateway-Timeout-Ms"], req["amz-sdk-request"],
         req["X-Stainless-Retry-Count"], req["X-Stainless-Timeout"]},
        state.cfg.retry);
    if (!terms) return terms.error();
    std::optional<pending_caller> pending;
    if (auto over = charge_caller(req, rt->op, who, state, ctx, pending)) return *over;
    return admitted{.rt = std::move(*rt),
                    .plan = std::move(*plan),
                    .terms = *terms,
                    .signing = std::move(signing),
                    .slot = std::move(*slot),
                    .caller = std::move(pending)};
}

}  // namespace bgw::pipeline
