// Fuzzes parse_config (bgw/config/config.hpp): the input is a config document. Invariants
// checked on an accepted config (cheap ones only):
// - parsing is deterministic (the same text gives an equal config);
// - default_region, every route target's region and every caller key's regions are allowed;
// - every allowed region has its control-plane and S3 endpoints, and endpoints have a host;
// - route targets number 1..16, model ids 1..2048 bytes, retry.max_delay >= retry.base_delay;
// - the helpers that take a config (check_exposure, named_models, restart_only_changes against
//   itself, find_price, token_cost_usd) run clean; an error names the JSON path.
#include "bgw/config/config.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

using namespace bgw::config;

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant failed: %s\n", what);
        std::abort();
    }
}

bool same(const config& a, const config& b) {
    return a.listen_host == b.listen_host && a.listen_port == b.listen_port &&
           a.admin_listen == b.admin_listen && a.default_region == b.default_region &&
           a.regions == b.regions && a.control_endpoints == b.control_endpoints &&
           a.s3_endpoints == b.s3_endpoints && a.upstream == b.upstream && a.limits == b.limits &&
           a.retry == b.retry && a.rate_limits == b.rate_limits && a.routes == b.routes &&
           a.batch == b.batch && a.credentials == b.credentials && a.auth == b.auth &&
           a.prices == b.prices && a.caller_keys == b.caller_keys &&
           a.allow_unauthenticated == b.allow_unauthenticated && a.log_level == b.log_level &&
           a.log_format == b.log_format && a.threads == b.threads &&
           a.shutdown_grace == b.shutdown_grace;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto r = parse_config(text);
    if (!r) {
        check(r.error().type == "ValidationException", "config error of another type");
        check(!r.error().message.empty(), "config error without a message");
        return 0;
    }
    const config& cfg = *r;
    check(!cfg.regions.empty(), "no allowed region");
    check(cfg.regions.contains(cfg.default_region), "default_region not allowed");
    for (const auto& [name, ep] : cfg.regions) {
        check(is_region_name(name), "allowed region with a bad name");
        check(!ep.host.empty(), "region endpoint without host");
        check(cfg.control_endpoints.contains(name), "region without control endpoint");
        check(cfg.s3_endpoints.contains(name), "region without S3 endpoint");
    }
    for (const auto& [name, route] : cfg.routes) {
        check(!name.empty() && name.size() <= 2048, "route name length");
        check(!route.targets.empty() && route.targets.size() <= 16, "route target count");
        for (const auto& t : route.targets) {
            check(cfg.regions.contains(t.region), "route target region not allowed");
            check(!t.model_id.empty() && t.model_id.size() <= 2048, "target model id length");
            check(t.tier != tier::batch || cfg.batch.enabled, "batch target without batch");
            tier back{};
            check(parse_tier(tier_name(t.tier), back) && back == t.tier, "tier name round trip");
        }
    }
    for (const auto& [name, key] : cfg.caller_keys) {
        for (const auto& region : key.regions) {
            check(cfg.regions.contains(region), "caller key region not allowed");
        }
    }
    check(cfg.retry.max_delay >= cfg.retry.base_delay, "retry delays inverted");
    check(cfg.retry.max_attempts >= 1 && cfg.retry.max_attempts <= 10, "retry attempts range");

    auto again = parse_config(text);
    check(again && same(cfg, *again), "parse_config is not deterministic");
    check(restart_only_changes(cfg, *again).empty(), "a config differs from itself");

    (void)check_exposure(cfg);
    const auto models = named_models(cfg);
    for (const auto& m : models) {
        if (const price* p = find_price(cfg, m, m)) {
            for (tier t : {tier::on_demand, tier::provisioned, tier::batch}) {
                const double usd = token_cost_usd(*p, t, 1'000'000, 1'000'000);
                check(std::isfinite(usd) && usd >= 0, "cost not a finite non-negative number");
            }
        }
    }
    return 0;
}
