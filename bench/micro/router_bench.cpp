// Router micro-benchmarks: the per-request routing decision (recognise the runtime operation in
// the target, then plan the targets from the config), as src/net/forward.cpp makes it.

#include "bgw/config/config.hpp"
#include "bgw/routing/router.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <benchmark/benchmark.h>

namespace {

namespace http = boost::beast::http;
namespace routing = bgw::routing;

/// The README's routing example plus a few more regions and quotas, as a deployment has them.
constexpr const char* config_json = R"({
  "default_region": "us-east-1",
  "regions": { "us-east-1": {}, "us-west-2": {}, "eu-west-1": {}, "eu-central-1": {},
               "ap-northeast-1": {} },
  "rate_limits": { "anthropic.claude-3-5-sonnet-20240620-v1:0": { "rpm": 50, "tpm": 200000 },
                   "*": { "rpm": 1000 } },
  "routes": {
    "claude-prod": { "targets": [
      { "region": "us-east-1", "tier": "provisioned",
        "model_id": "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt1" },
      { "region": "us-east-1", "tier": "on-demand",
        "model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0" },
      { "region": "eu-west-1", "tier": "on-demand",
        "model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0", "service_tier": "flex" } ] },
    "haiku": { "targets": [
      { "region": "us-west-2", "tier": "on-demand",
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0" } ] } } })";

const bgw::config::config& cfg() {
    static const bgw::config::config c = *bgw::config::parse_config(config_json);
    return c;
}

/// One decision: parse the target, then route it with the given intent.
void decide(benchmark::State& state,
            std::string_view target,
            std::string_view region_header,
            std::string_view authorization) {
    const auto& c = cfg();
    for (auto _ : state) {
        auto rt = routing::parse_runtime_target(http::verb::post, target);
        if (!rt) {
            state.SkipWithError("target refused");
            return;
        }
        auto plan = routing::route(*rt, {region_header, rt->region_prefix, authorization, {}}, c);
        if (!plan) {
            state.SkipWithError("route refused");
            return;
        }
        benchmark::DoNotOptimize(plan);
    }
    state.SetItemsProcessed(state.iterations());
}

/// The common case: a plain model id, no route, no intent (default region).
void router_plain_model(benchmark::State& state) {
    decide(state, "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke", {}, {});
}
BENCHMARK(router_plain_model);

/// A route name with three targets, the app's SigV4 scope naming an allowed region.
void router_route_signed(benchmark::State& state) {
    decide(state, "/model/claude-prod/converse", {},
           "AWS4-HMAC-SHA256 Credential=AKIDAPP/20260115/eu-west-1/bedrock/aws4_request, "
           "SignedHeaders=host;x-amz-date, "
           "Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
}
BENCHMARK(router_route_signed);

/// A route name pinned to one region by X-Gateway-Region.
void router_route_pinned(benchmark::State& state) {
    decide(state, "/model/claude-prod/converse-stream", "eu-west-1", {});
}
BENCHMARK(router_route_pinned);

}  // namespace
