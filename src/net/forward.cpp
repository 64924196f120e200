// The definitions behind bgw/net/forward.hpp (its comment says what they are for).

#include "bgw/net/forward.hpp"

#include "bgw/net/admin_endpoints.hpp"
#include "bgw/net/attempt.hpp"
#include "bgw/net/client_watch.hpp"
#include "bgw/net/control_plane.hpp"
#include "bgw/net/relay.hpp"
#include "bgw/net/shared_state.hpp"
#include "bgw/pipeline/admit.hpp"
#include "bgw/pipeline/upstream_walk.hpp"
#include "bgw/policy/callers.hpp"
#include "bgw/policy/hold.hpp"
#include "bgw/routing/control_plane.hpp"
#include "bgw/routing/router.hpp"
#include "bgw/routing/runtime_path.hpp"
#include "bgw/routing/upstream_request.hpp"
#include "bgw/util/json.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::net {
namespace {

namespace http = beast::http;
using clock = std::chrono::steady_clock;

std::mt19937_64& jitter_rng() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return rng;
}

/// An allowed control-plane read: the region by the runtime API's intent rules and the caller
/// key's regions, then the answer (cached, or one signed call).
awaitable<bool> serve_control_read(client_side& c,
                                   const http::request<http::string_body>& req,
                                   const routing::control_request& control,
                                   gateway_context& g,
                                   const config::config& cfg,
                                   const policy::caller& who) {
    c.ctx.op = control.operation;
    auto region =
        routing::choose_region({req["X-Gateway-Region"], {}, req[http::field::authorization], {}},
                               control.region_prefix, cfg, control.query_credential);
    if (!region) co_return co_await c.answer(region.error());
    if (!policy::region_allowed(who, *region)) {
        const error elsewhere{
            http::status::forbidden, "AccessDeniedException",
            "caller key " + std::string(who.name) + " may not use region " + *region};
        co_return co_await c.answer(elsewhere);
    }
    c.ctx.region = *region;
    auto res = co_await answer_control_read(g, cfg, control, *region,
                                            std::string(req[http::field::user_agent]), c.ctx.id);
    co_return co_await c.respond(res);
}

/// A request for the batch tier: spooled durably, then answered 202 with where to collect it.
awaitable<bool> accept_batch(client_side& c,
                             const http::request<http::string_body>& req,
                             const routing::target& t,
                             const routing::runtime_request& rt,
                             gateway_context& g) {
    c.ctx.region = t.region;
    c.ctx.tier = config::tier_name(t.tier);
    // The record goes into a JSONL file: one compact JSON object, whatever the app's spacing.
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(req.body().data(), req.body().size()));
    if (doc.HasParseError() || !doc.IsObject()) {
        const error not_object =
            validation_error("a batch record's body must be a JSON object, nested at most " +
                             std::to_string(bgw::util::max_json_depth) + " levels deep");
        co_return co_await c.answer(not_object);
    }
    rapidjson::StringBuffer compact;
    rapidjson::Writer<rapidjson::StringBuffer> cw(compact);
    doc.Accept(cw);
    auto id = g.batch->accept(t.region, t.model_id,
                              rt.op == routing::operation::converse ? "Converse" : "InvokeModel",
                              std::string(compact.GetString(), compact.GetSize()), c.ctx.caller);
    if (!id) co_return co_await c.answer(id.error());
    rapidjson::StringBuffer body;
    rapidjson::Writer<rapidjson::StringBuffer> w(body);
    w.StartObject();
    w.Key("recordId");
    w.String(id->c_str());
    w.Key("status");
    w.String("queued");
    w.EndObject();
    http::response<http::string_body> res{http::status::accepted, 11};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::location, "/gateway/batch/records/" + *id);
    res.set("x-amzn-RequestId", c.ctx.id);
    add_gateway_headers(res, c.ctx);
    res.body().assign(body.GetString(), body.GetSize());
    res.prepare_payload();
    c.ctx.batch_record = *id;
    co_return co_await c.respond(res);
}

/// What the walk tells the metrics.
class metrics_observer final : public pipeline::walk_observer {
public:
    explicit metrics_observer(obs::metrics& m) : m_(m) {}
    void throttle(const std::string& region,
                  const std::string& model,
                  std::string_view source) override {
        m_.throttle(region, model, source);
    }
    void failover() override { m_.failover(); }
    void retry() override { m_.retry(); }

private:
    obs::metrics& m_;
};

/// Builds attempt `s` of the walk: the target's shape of the request, signed afresh (a new
/// X-Amz-Date) for the target's region.
struct attempt_builder {
    const http::request<http::string_body>& req;
    const pipeline::admitted& a;
    std::string_view body;
    gateway_context& g;
    const config::config& cfg;
    std::optional<std::string> rewritten;
    pipeline::shaped_request shaped{};

    const config::region_endpoint& build(const pipeline::send& s, upstream_request_message& out) {
        static const aws::credentials no_credentials;
        const routing::target& t = a.plan.targets[s.target];
        if (s.attempt == 1) shaped = pipeline::shape_for_target(a.rt, t, body, rewritten);
        const config::region_endpoint& ep = cfg.regions.at(t.region);
        auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
        auto prepared = routing::prepare_upstream_request(
            req.method(), shaped.rt, req, shaped.body,
            {.endpoint = ep, .region = t.region, .service_tier = shaped.tier_header},
            {.creds = a.signing ? a.signing->creds : no_credentials,
             .now = now,
             .cache = &g.keys,
             .bearer_token = g.bearer});
        out.head = routing::wire_head(prepared, shaped.body.size());
        out.body = shaped.body;
        return ep;
    }
};

/// Runs an admitted request upstream: the walk over its targets (each attempt signed afresh),
/// then the relay of the answer it settles on. From the first attempt until the answer is
/// relayed, a client that hangs up cancels the upstream.
awaitable<bool> run_upstream(client_side& c,
                             const http::request<http::string_body>& req,
                             std::string_view body,
                             const pipeline::admitted& a,
                             gateway_context& g,
                             const config::config& cfg) {
    policy::hold_budget hold(c.ctx.start, cfg.retry.max_hold, a.terms.timeout);
    metrics_observer seen{g.metrics};
    std::optional<pipeline::shared_admission> shared;
    if (g.fleet) shared.emplace(cfg.rate_limits, g.fleet->key_prefix(), *g.fleet);
    pipeline::upstream_walk walk({.rt = a.rt,
                                  .plan = a.plan,
                                  .body = body,
                                  .traffic = g.traffic,
                                  .hold = hold,
                                  .retry = cfg.retry,
                                  .max_attempts = a.terms.max_attempts,
                                  .rng = jitter_rng(),
                                  .observer = seen,
                                  .shared = shared ? &*shared : nullptr,
                                  .caller = a.caller ? &*a.caller : nullptr},
                                 c.ctx);
    auto watch = std::make_shared<client_watch>();
    c.port.watch(watch, near_timer_period);
    struct watch_guard {
        client_port& client;
        client_watch& w;
        ~watch_guard() { client.unwatch(w); }
    } guard{c.port, *watch};
    upstream_leg leg;
    upstream_request_message out;
    attempt_builder attempts{req, a, body, g, cfg, {}, {}};
    asio::steady_timer sleeper(c.port.executor());
    const attempt_context each_attempt{
        .ex = c.port.executor(),
        .g = g,
        .cfg = cfg,
        .watch = *watch,
        .log = c.ctx,
        .hold = hold,
        .head_room = routing::is_streaming(a.rt.op) ? stream_read_bytes : head_read_bytes};
    for (auto s = walk.next(clock::now());; s = walk.next(clock::now())) {
        if (const auto* w = std::get_if<pipeline::wait>(&s)) {
            if (!co_await hold_on(sleeper, *watch, hold, w->ms)) co_return c.gone();
            continue;
        }
        if (const auto* done = std::get_if<pipeline::answer>(&s))
            co_return co_await c.answer(*done);
        if (const auto* q = std::get_if<pipeline::consult>(&s)) {
            // Fleet mode: one script run decides this admission, within timeout_ms.
            walk.consulted(co_await g.fleet->admit(c.port.executor(), q->ask), clock::now());
            continue;
        }
        const auto& ep = attempts.build(std::get<pipeline::send>(s), out);
        auto r = co_await attempt_once(each_attempt, ep, out, leg);
        if (watch->client_gone) co_return c.gone();
        const auto v = walk.record(report(r, leg), clock::now());
        if (auto note = walk.take_rest_note()) {
            // The fleet learns of the throttle before this client hears of it.
            auto in_force = co_await g.fleet->publish_rest(c.port.executor(), note->region,
                                                           note->model, note->rest);
            if (in_force && *in_force > note->rest)
                g.traffic.learn_rest(note->region, note->model, *in_force, clock::now());
        }
        if (v == pipeline::verdict::relay) break;
        release(g, *watch, leg, r);
    }
    const relay_inputs relaying{g, cfg, walk, leg, *watch, a.rt.op};
    co_return co_await relay_answer(c, relaying);
}

/// Fleet mode, a request no walk admits (the batch tier): the caller key's charge alone, in the
/// shared state, or locally when it does not answer.
awaitable<std::optional<policy::throttle_answer>> charge_caller_shared(
    client_side& c, const pipeline::pending_caller& caller, gateway_context& g) {
    const auto key = fleet::caller_key(g.fleet->key_prefix(), caller.name);
    fleet::admission_ask ask;
    ask.caller = fleet::bucket_ask{key, caller.limit.rpm, caller.limit.tpm, caller.estimate};
    auto v = co_await g.fleet->admit(c.port.executor(), ask);
    if (!v) co_return pipeline::charge_locally(caller, c.ctx, clock::now());
    if (v->code == fleet::admission_code::caller_over)
        co_return policy::traffic_policy::caller_answer(caller.name, v->wait);
    c.ctx.held.hold_caller_shared(*g.fleet, key, caller.limit.tpm, caller.estimate);
    co_return std::nullopt;
}

/// A runtime API request, after its caller key: admitted (or refused), then queued for the batch
/// tier or run upstream.
awaitable<bool> forward_runtime(client_side& c,
                                http::request<http::string_body>& req,
                                const policy::caller& who,
                                gateway_context& g,
                                const config::config& cfg) {
    const bool bearer = !g.bearer.empty();
    const auto signing = bearer ? result<std::shared_ptr<const aws::timed_credentials>>{nullptr}
                                : g.sigv4_credentials();
    pipeline::admission_state state{.cfg = cfg,
                                    .streams = g.streams,
                                    .caller_limits = g.caller_limits.load(),
                                    .shared = g.fleet != nullptr,
                                    .signing = &signing,
                                    .bearer = bearer};
    auto admission = pipeline::admit(req, who, state, c.ctx);
    if (const auto* no = std::get_if<pipeline::refusal>(&admission))
        co_return co_await c.answer(*no);
    const auto& a = std::get<pipeline::admitted>(admission);
    if (a.plan.targets.front().tier == config::tier::batch) {
        if (a.caller) {
            if (auto over = co_await charge_caller_shared(c, *a.caller, g))
                co_return co_await c.answer(pipeline::refusal{std::move(*over)});
        }
        co_return co_await accept_batch(c, req, a.plan.targets.front(), a.rt, g);
    }
    // The request is all parsed: a connection that holds a long stream holds no read buffer
    // (a short answer keeps it for the connection's next request).
    if (routing::is_streaming(a.rt.op)) c.port.idle_buffers();
    const std::string body = std::move(req.body());
    co_return co_await run_upstream(c, req, body, a, g, cfg);
}

}  // namespace

std::optional<error> refuse_head(const http::request<http::string_body>& req,
                                 const config::config& cfg,
                                 listener_role role,
                                 request_ctx& log) {
    if (is_admin_path(req.target()) || role == listener_role::admin) return std::nullopt;
    auto who = policy::authenticate(cfg, req["x-api-key"], req[http::field::authorization]);
    if (!who) return who.error();
    if (req.target().starts_with("/gateway/batch/")) return std::nullopt;
    auto control = routing::parse_control_target(req.method(), req.target());
    if (!control) return control.error();
    if (*control) return std::nullopt;  // a read-only control-plane call: no body, no model
    auto rt = routing::parse_runtime_target(req.method(), req.target());
    if (!rt) return rt.error();
    log.op = routing::operation_name(rt->op);
    log.model = rt->model_id;
    if (auto allowed = policy::authorize_model(*who, rt->model_id); !allowed)
        return allowed.error();
    return std::nullopt;
}

awaitable<bool> forward(client_side& c,
                        http::request<http::string_body>& req,
                        gateway_context& g,
                        const config::config& cfg,
                        listener_role role) {
    c.ctx.bytes_in = req.body().size();
    const bool admin_path = is_admin_path(req.target());
    if (admin_path || role == listener_role::admin) {
        const bool here = admin_path && (role == listener_role::admin || !cfg.admin_listen);
        co_return co_await serve_admin(c, req, g, here);
    }
    // Caller keys (when configured) guard everything below: the runtime API and batch results.
    auto who = policy::authenticate(cfg, req["x-api-key"], req[http::field::authorization]);
    if (!who) co_return co_await c.answer(who.error());
    c.ctx.caller = who->name;
    if (req.target().starts_with("/gateway/batch/")) {
        c.ctx.op = "GatewayBatch";
        if (!g.batch) {
            const error off{http::status::not_implemented, "NotImplementedException",
                            "the batch tier is not configured on this gateway (no batch section)"};
            co_return co_await c.answer(off);
        }
        auto res = g.batch->answer(req.method(), req.target(), who->name, c.ctx.id);
        co_return co_await c.respond(res);
    }
    // The read-only control plane (ListInferenceProfiles, ...); any other control-plane call is
    // refused here and never signed.
    auto control = routing::parse_control_target(req.method(), req.target());
    if (!control) co_return co_await c.answer(control.error());
    if (*control) co_return co_await serve_control_read(c, req, **control, g, cfg, *who);
    co_return co_await forward_runtime(c, req, *who, g, cfg);
}

}  // namespace bgw::net
