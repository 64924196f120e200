#pragma once
/// Where a request runs and how it is paid for (issue 5), as a pure function of what the client
/// asked (headers, path prefix, credential scope) and the config: an ordered list of targets.
/// The I/O shell walks the list; nothing here touches a socket or a clock.

#include "bgw/config/config.hpp"
#include "bgw/error.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace bgw::routing {

/// One place to send the request: the region (always in the allow-list), the tier, the model
/// id to put in the path, and the service tier to ask for (empty: whatever the client sent).
struct target {
    std::string region;
    config::tier tier = config::tier::on_demand;
    std::string model_id;
    std::string service_tier;
};

/// What the client said about where and how, as raw text (empty when absent).
struct intent {
    std::string_view region_header;  ///< X-Gateway-Region: strong
    std::string_view region_prefix;  ///< `/{region}/model/...`: strong
    std::string_view authorization;  ///< an incoming SigV4 credential scope's region: weak
    std::string_view tier_header;    ///< X-Gateway-Tier: on-demand | provisioned | batch
};

struct plan {
    std::vector<target> targets;  ///< in the order to try; never empty
    std::string route;            ///< the route that matched the model id, or empty
    std::string pinned_region;    ///< set when the client pinned a region (strong intent)
};

/// The targets for `req`:
/// - region intent, strongest first: `X-Gateway-Region`, the path prefix, the credential scope
///   (the Authorization header's, else a presigned query's `req.query_credential`).
///   A strong one must be a region name (else 400) in the allow-list (else 403), and only its
///   targets remain; a weak one (only honoured when allowed) puts its region's targets first;
/// - a model id naming a route gives the route's targets, in order; any other request has one
///   on-demand target, itself, in the pinned, weak or default region;
/// - `X-Gateway-Tier` keeps only that tier's targets (none left: 400 naming the route's tiers);
///   batch targets are used only when asked for (or when a route has nothing else); batch
///   needs the `batch` section (else 501) and takes InvokeModel and Converse only (else 400).
result<plan> route(const runtime_request& req, const intent& in, const config::config& cfg);

/// The one region a request without a model runs in (the read-only control plane): the same
/// intent rules as route()'s (header, then `region_prefix`, then the credential scope of the
/// Authorization header or else of `query_credential` when allowed, then the default region),
/// the same errors.
result<std::string> choose_region(const intent& in,
                                  std::string_view region_prefix,
                                  const config::config& cfg,
                                  std::string_view query_credential = {});

}  // namespace bgw::routing
