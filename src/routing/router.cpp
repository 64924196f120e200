#include "bgw/routing/router.hpp"

#include "bgw/aws/sigv4.hpp"

#include <algorithm>
#include <array>

namespace bgw::routing {
namespace {

namespace beast_http = boost::beast::http;

/// Checks a strongly asked-for region: a region name, and one this gateway may use.
result<std::string> pinned(std::string_view asked,
                           std::string_view where,
                           const config::config& cfg) {
    std::string region(asked);
    if (!config::is_region_name(region)) {
        return validation_error(std::string(where) + " \"" + region +
                                "\" is not a region name (like eu-west-1)");
    }
    if (!cfg.regions.contains(region)) {
        std::string allowed;
        for (const auto& [name, ep] : cfg.regions) allowed += (allowed.empty() ? "" : ", ") + name;
        return error{beast_http::status::forbidden, "AccessDeniedException",
                     "region " + region + " (" + std::string(where) +
                         ") is not allowed by this gateway; allowed: " + allowed};
    }
    return region;
}

std::string tiers_of(const std::vector<config::route_target>& targets) {
    std::string out;
    for (auto t : {config::tier::on_demand, config::tier::provisioned, config::tier::batch}) {
        if (std::any_of(targets.begin(), targets.end(), [t](const auto& x) { return x.tier == t; }))
            out += (out.empty() ? "" : ", ") + std::string(config::tier_name(t));
    }
    return out;
}

/// Strong region intent (the header, else the path prefix): a region in the allow-list, or
/// empty when there is none.
result<std::string> strong_region(const intent& in,
                                  std::string_view region_prefix,
                                  const config::config& cfg) {
    if (!in.region_header.empty()) return pinned(in.region_header, "X-Gateway-Region", cfg);
    if (!region_prefix.empty())
        return pinned(region_prefix, "path prefix /" + std::string(region_prefix), cfg);
    return std::string();
}

/// The region of a credential scope (`AKID/YYYYMMDD/region/service/aws4_request`); empty when
/// `credential` is not one.
std::string_view scope_region(std::string_view credential) {
    std::array<std::string_view, 5> parts;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        const auto slash = credential.find('/');
        if ((slash == std::string_view::npos) != (i + 1 == parts.size())) return {};
        parts[i] = credential.substr(0, slash);
        credential.remove_prefix(slash == std::string_view::npos ? credential.size() : slash + 1);
    }
    return parts[4] == "aws4_request" ? parts[2] : std::string_view();
}

/// Weak: the region the app signed for, in an Authorization header or else in the query of a
/// presigned request, when this gateway may use it; else empty.
std::string weak_region(const intent& in,
                        std::string_view query_credential,
                        const config::config& cfg) {
    std::string signed_for;
    if (auto auth = aws::parse_authorization(in.authorization); auth)
        signed_for = std::move(auth->region);
    else
        signed_for = scope_region(query_credential);
    if (!signed_for.empty() && cfg.regions.contains(signed_for)) return signed_for;
    return {};
}

/// Tier intent: X-Gateway-Tier, else batch for a route (`targets`, null for none) of batch
/// targets only; none otherwise. Batch must be configured, and takes InvokeModel and Converse
/// only.
result<std::optional<config::tier>> tier_intent(const runtime_request& req,
                                                const intent& in,
                                                const std::vector<config::route_target>* targets,
                                                const config::config& cfg) {
    std::optional<config::tier> tier;
    if (!in.tier_header.empty()) {
        config::tier t;
        if (!config::parse_tier(in.tier_header, t)) {
            return validation_error("X-Gateway-Tier \"" + std::string(in.tier_header) +
                                    "\" must be on-demand, provisioned or batch");
        }
        tier = t;
    }
    // A route of batch targets only is batch without being asked.
    if (!tier && targets && std::all_of(targets->begin(), targets->end(), [](const auto& t) {
            return t.tier == config::tier::batch;
        }))
        tier = config::tier::batch;
    if (tier != config::tier::batch) return tier;
    if (!cfg.batch.enabled) {
        return error{beast_http::status::not_implemented, "NotImplementedException",
                     "the batch tier is not configured on this gateway (no batch section)"};
    }
    if (req.op != operation::invoke_model && req.op != operation::converse) {
        return validation_error(
            "the batch tier takes InvokeModel and Converse requests only, not " +
            std::string(operation_name(req.op)));
    }
    return tier;
}

/// Why a route has no target for the request: the tier and region asked for, and what it has.
error no_target(const std::string& route,
                std::optional<config::tier> tier,
                const std::string& pinned_region,
                const std::vector<config::route_target>& all) {
    std::string why = "route " + route + " has no ";
    if (tier) why += std::string(config::tier_name(*tier)) + " ";
    why += "target";
    if (!pinned_region.empty()) why += " in " + pinned_region;
    why += " (its tiers: " + tiers_of(all) + "; its regions:";
    std::vector<std::string> regions;
    for (const auto& t : all) {
        if (std::find(regions.begin(), regions.end(), t.region) == regions.end())
            regions.push_back(t.region);
    }
    for (const auto& r : regions) why += " " + r;
    return validation_error(why + ")");
}

}  // namespace

result<std::string> choose_region(const intent& in,
                                  std::string_view region_prefix,
                                  const config::config& cfg,
                                  std::string_view query_credential) {
    auto strong = strong_region(in, region_prefix, cfg);
    if (!strong || !strong->empty()) return strong;
    auto weak = weak_region(in, query_credential, cfg);
    return weak.empty() ? cfg.default_region : weak;
}

result<plan> route(const runtime_request& req, const intent& in, const config::config& cfg) {
    plan out;
    auto strong = strong_region(in, req.region_prefix, cfg);
    if (!strong) return strong.error();
    out.pinned_region = std::move(*strong);
    const std::string weak = weak_region(in, req.query_credential, cfg);
    auto found = req.model_id.empty() ? cfg.routes.end() : cfg.routes.find(req.model_id);
    auto asked_tier =
        tier_intent(req, in, found == cfg.routes.end() ? nullptr : &found->second.targets, cfg);
    if (!asked_tier) return asked_tier.error();
    const std::optional<config::tier> tier = *asked_tier;

    if (found == cfg.routes.end()) {
        // Not a route: the request itself, on demand (or batch when asked), where the client
        // asked or by default.
        if (tier == config::tier::provisioned) {
            return validation_error("X-Gateway-Tier " + std::string(config::tier_name(*tier)) +
                                    ": \"" + req.model_id +
                                    "\" is not a route, so it runs on-demand only");
        }
        std::string region = !out.pinned_region.empty() ? out.pinned_region
                             : !weak.empty()            ? weak
                                                        : cfg.default_region;
        out.targets.push_back(
            {std::move(region), tier.value_or(config::tier::on_demand), req.model_id, {}});
        return out;
    }

    out.route = found->first;
    const auto& all = found->second.targets;
    for (const auto& t : all) {
        // Batch targets only serve requests that ask for batch.
        if (tier ? t.tier != *tier : t.tier == config::tier::batch) continue;
        if (!out.pinned_region.empty() && t.region != out.pinned_region) continue;
        out.targets.push_back({t.region, t.tier, t.model_id, t.service_tier});
    }
    if (out.targets.empty()) return no_target(out.route, tier, out.pinned_region, all);
    if (out.pinned_region.empty() && !weak.empty()) {
        std::stable_partition(out.targets.begin(), out.targets.end(),
                              [&](const target& t) { return t.region == weak; });
    }
    return out;
}

}  // namespace bgw::routing
