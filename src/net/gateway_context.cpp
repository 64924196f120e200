// The process-wide state: the config snapshot and its reload, credentials, metrics gauges.

#include "bgw/fleet/shared_limits.hpp"
#include "bgw/net/gateway.hpp"
#include "bgw/net/shared_state.hpp"
#include "bgw/obs/log.hpp"

#include <set>
#include <string>

namespace bgw::net {
namespace {

/// The caller keys' limiter; in fleet mode, this gateway's share of each key's budget.
std::shared_ptr<policy::rate_limiter> make_caller_limits(const config::config& cfg,
                                                         unsigned fleet_size = 1) {
    std::map<std::string, policy::model_limit> m;
    for (const auto& [name, key] : cfg.caller_keys) {
        if (!key.limit.rpm && !key.limit.tpm) continue;
        const auto l = fleet_size > 1 ? fleet::local_share(key.limit, fleet_size) : key.limit;
        m.emplace(name, policy::model_limit{l.rpm, l.tpm});
    }
    return std::make_shared<policy::rate_limiter>(std::move(m));
}

bool same_caller_limits(const config::config& a, const config::config& b) {
    if (a.caller_keys.size() != b.caller_keys.size()) return false;
    for (const auto& [name, key] : a.caller_keys) {
        auto it = b.caller_keys.find(name);
        if (it == b.caller_keys.end() || !(it->second.limit == key.limit)) return false;
    }
    return true;
}

}  // namespace

gateway_context::gateway_context(std::shared_ptr<const config::config> c,
                                 std::shared_ptr<credential_source> cr,
                                 std::string bearer_token)
    : creds(std::move(cr)),
      bearer(std::move(bearer_token)),
      tls(make_tls_context(c->upstream.ca_file)),
      pool(c->upstream.max_idle_per_host, c->upstream.pool_idle_timeout),
      traffic(c->retry, c->rate_limits),
      metrics(config::named_models(*c)) {
    caller_limits.store(make_caller_limits(*c));
    current.store(std::move(c));
}

gateway_context::~gateway_context() = default;

result<std::shared_ptr<const aws::timed_credentials>> gateway_context::sigv4_credentials() const {
    if (!creds) {
        return error{boost::beast::http::status::service_unavailable, "ServiceUnavailableException",
                     "the gateway has no AWS credentials"};
    }
    return creds->usable();
}

result<void> gateway_context::reload(std::shared_ptr<const config::config> next) {
    auto running = snapshot();
    if (auto changed = config::restart_only_changes(*running, *next); !changed.empty()) {
        std::string list;
        for (const auto& key : changed) list += (list.empty() ? "" : ", ") + key;
        return validation_error("changes settings that need a restart (" + list +
                                "); nothing was reloaded");
    }
    obs::log_format format = obs::log_format::json;
    obs::parse_log_format(next->log_format, format);  // validated by the parser
    obs::set_log_level(next->log_level);
    obs::set_log_format(format);
    const unsigned n = fleet ? fleet->fleet_size() : 1;
    traffic.reconfigure(next->retry,
                        n > 1 ? fleet::local_share(next->rate_limits, n) : next->rate_limits);
    if (!same_caller_limits(*running, *next)) caller_limits.store(make_caller_limits(*next, n));
    metrics.know_models(config::named_models(*next));
    current.store(std::move(next));
    return {};
}

void gateway_context::share_limits(unsigned fleet_size) {
    auto cfg = snapshot();
    traffic.reconfigure(cfg->retry, fleet::local_share(cfg->rate_limits, fleet_size));
    caller_limits.store(make_caller_limits(*cfg, fleet_size));
}

void gateway_context::count_usage(const config::config& cfg,
                                  std::string_view region,
                                  config::tier tier,
                                  std::string_view model,
                                  std::string_view target_model,
                                  const policy::usage& used) {
    const auto tier_label = config::tier_name(tier);
    metrics.tokens(region, tier_label, model, used.input, used.output);
    const config::price* p = config::find_price(cfg, target_model, model);
    if (!p) return;
    const double cost = config::token_cost_usd(*p, tier, used.input, used.output);
    metrics.cost(region, tier_label, model, cost);
    if (tier == config::tier::batch) {
        metrics.batch_savings(
            region, model,
            config::token_cost_usd(*p, config::tier::on_demand, used.input, used.output) - cost);
    }
}

obs::gauges gateway_context::gauges() const {
    obs::gauges out;
    out.inflight_requests = inflight.load();
    out.open_connections = connections.load();
    out.open_streams = streams.load();
    out.inflight_body_bytes = inflight_body_bytes.load();
    if (creds) {
        if (auto c = creds->current(); c && c->expiration) {
            out.credentials_expiry_seconds =
                static_cast<double>((*c->expiration - std::chrono::floor<std::chrono::seconds>(
                                                          std::chrono::system_clock::now()))
                                        .count());
        }
    }
    if (batch) out.batch_records = batch->record_counts();
    if (fleet) out.shared_state = fleet->gauges();
    // Provisioned throughput is paid by the hour while it exists, whether or not it serves.
    auto cfg = snapshot();
    const double hours =
        std::chrono::duration<double, std::ratio<3600>>(std::chrono::steady_clock::now() - started)
            .count();
    for (const auto& [name, r] : cfg->routes) {
        for (const auto& t : r.targets) {
            if (t.tier != config::tier::provisioned) continue;
            const config::price* p = config::find_price(*cfg, t.model_id, name);
            if (!p || p->model_units == 0) continue;
            out.provisioned_cost_usd[{t.region, t.model_id}] =
                hours * p->model_unit_hour * p->model_units;
        }
    }
    return out;
}

}  // namespace bgw::net
