#include "bgw/config/config.hpp"

#include <gtest/gtest.h>

namespace {

using bgw::config::parse_config;

TEST(config, defaults_when_empty_object) {
    auto c = parse_config("{}");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->listen_host, "127.0.0.1");
    EXPECT_EQ(c->listen_port, 8080);
    EXPECT_EQ(c->default_region, "us-east-1");
    EXPECT_EQ(c->regions.size(), bgw::config::default_regions().size());
    const auto& ep = c->regions.at("eu-west-1");
    EXPECT_TRUE(ep.tls);
    EXPECT_EQ(ep.host, "bedrock-runtime.eu-west-1.amazonaws.com");
    EXPECT_EQ(ep.port, 443);
    EXPECT_EQ(ep.host_header, "bedrock-runtime.eu-west-1.amazonaws.com");
    EXPECT_EQ(c->limits.max_body_bytes, 25'000'000u);
}

TEST(config, issue_example_parses) {
    auto c = parse_config(R"({ "listen": "127.0.0.1:8080",
      "default_region": "us-east-1",
      "regions": { "us-east-1": {}, "eu-west-1": { "endpoint": "http://127.0.0.1:9001" } },
      "upstream": { "ca_file": "", "connect_timeout_ms": 3000, "response_timeout_ms": 120000 } })");
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_EQ(c->regions.size(), 2u);
    const auto& eu = c->regions.at("eu-west-1");
    EXPECT_FALSE(eu.tls);
    EXPECT_EQ(eu.host, "127.0.0.1");
    EXPECT_EQ(eu.port, 9001);
    EXPECT_EQ(eu.host_header, "127.0.0.1:9001");
    EXPECT_EQ(c->upstream.connect_timeout.count(), 3000);
    EXPECT_EQ(c->upstream.response_timeout.count(), 120000);
}

TEST(config, stream_idle_timeout) {
    auto d = parse_config("{}");
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->upstream.stream_idle_timeout.count(), 300000);  // above long thinking pauses
    auto c = parse_config(R"({"upstream":{"stream_idle_timeout_ms":2500}})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->upstream.stream_idle_timeout.count(), 2500);
}

TEST(config, pool_idle_timeout) {
    auto d = parse_config("{}");
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->upstream.pool_idle_timeout.count(), 60000);
    auto c = parse_config(R"({"upstream":{"pool_idle_timeout_ms":120000}})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->upstream.pool_idle_timeout.count(), 120000);
    auto too_short = parse_config(R"({"upstream":{"pool_idle_timeout_ms":10}})");
    ASSERT_FALSE(too_short);
    EXPECT_NE(too_short.error().message.find("upstream.pool_idle_timeout_ms"), std::string::npos);
    // The pool is built once: a new value needs a restart, and a reload says so.
    EXPECT_EQ(bgw::config::restart_only_changes(*d, *c),
              (std::vector<std::string>{"upstream.pool_idle_timeout_ms"}));
}

TEST(config, listen_forms) {
    auto c = parse_config(R"({"listen":"[::1]:0"})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->listen_host, "::1");
    EXPECT_EQ(c->listen_port, 0);
}

struct bad_case {
    const char* json;
    const char* must_mention;
};

class config_rejects : public ::testing::TestWithParam<bad_case> {};

TEST_P(config_rejects, with_a_message_naming_the_key) {
    auto c = parse_config(GetParam().json);
    ASSERT_FALSE(c) << GetParam().json;
    EXPECT_NE(c.error().message.find(GetParam().must_mention), std::string::npos)
        << c.error().message;
    EXPECT_EQ(c.error().type, "ValidationException");
}

INSTANTIATE_TEST_SUITE_P(
    table,
    config_rejects,
    ::testing::Values(
        bad_case{"", "not valid JSON"},
        bad_case{"[]", "JSON object"},
        bad_case{"{} {}", "not valid JSON"},
        bad_case{R"({"lisen":"x"})", "lisen: unknown key"},
        bad_case{R"({"upstream":{"conect_timeout_ms":1}})", "upstream.conect_timeout_ms"},
        bad_case{R"({"regions":{"us-east-1":{"endpoit":"x"}}})", "regions.us-east-1.endpoit"},
        bad_case{R"({"listen":"127.0.0.1"})", "listen"},
        bad_case{R"({"listen":"127.0.0.1:99999"})", "listen"},
        // Start-up binds an address; a name (or a 127.x that is not an address) is refused now.
        bad_case{R"({"listen":"localhost:8080"})", "listen: \"localhost\" is not an IP address"},
        bad_case{R"({"listen":"127.evil.example:8080"})", "is not an IP address"},
        bad_case{R"({"admin_listen":"localhost:9090"})", "admin_listen: \"localhost\""},
        bad_case{R"({"limits":{"max_inflight_body_bytes":1000}})",
                 "limits.max_inflight_body_bytes"},
        bad_case{R"({"limits":{"max_body_bytes":5000000,"max_inflight_body_bytes":4000000}})",
                 "limits.max_inflight_body_bytes: must be at least limits.max_body_bytes"},
        bad_case{R"({"default_region":"eu-west-1","regions":{"us-east-1":{}}})", "default_region"},
        bad_case{R"({"regions":{"US-EAST-1":{}}})", "regions.US-EAST-1"},
        bad_case{R"({"regions":{"us-east-1":{"endpoint":"ftp://x"}}})",
                 "regions.us-east-1.endpoint"},
        bad_case{R"({"regions":{"us-east-1":{"endpoint":"http://x/path"}}})", "no path"},
        bad_case{R"({"regions":{}})", "at least one"},
        bad_case{R"({"upstream":{"connect_timeout_ms":0}})", "upstream.connect_timeout_ms"},
        bad_case{R"({"upstream":{"response_timeout_ms":"5"}})", "upstream.response_timeout_ms"},
        bad_case{R"({"upstream":{"stream_idle_timeout_ms":0}})", "upstream.stream_idle_timeout_ms"},
        bad_case{R"({"limits":{"max_body_bytes":-1}})", "limits.max_body_bytes"},
        bad_case{R"({"log_level":"loud"})", "log_level"},
        bad_case{R"({"listen":"127.0.0.1:1","listen":"127.0.0.1:2"})", "twice"},
        bad_case{R"({"retry":{"max_attempts":0}})", "retry.max_attempts"},
        bad_case{R"({"retry":{"max_attempts":3,"tries":2}})", "retry.tries: unknown key"},
        bad_case{R"({"retry":{"base_delay_ms":500,"max_delay_ms":100}})", "retry.max_delay_ms"},
        bad_case{R"({"retry":[]})", "retry"},
        bad_case{R"({"rate_limits":{"m":{"rpm":0}}})", "rate_limits.m.rpm"},
        bad_case{R"({"rate_limits":{"m":{"rpm":1.5}}})", "rate_limits.m.rpm"},
        bad_case{R"({"rate_limits":{"m":{"rps":5}}})", "rate_limits.m.rps: unknown key"},
        bad_case{R"({"rate_limits":{"m":{}}})", "rate_limits.m: needs rpm, tpm or both"},
        bad_case{R"({"rate_limits":{"m":{"rpm":1},"m":{"rpm":2}}})",
                 "rate_limits.m: key appears twice"},
        bad_case{R"({"rate_limits":{"m":5}})", "rate_limits.m"},
        bad_case{R"({"rate_limits":[]})", "rate_limits"},
        bad_case{R"({"routes":{"r":{}}})", "routes.r.targets: is required"},
        bad_case{R"({"routes":{"r":{"targets":[]}}})", "routes.r.targets: must be an array"},
        bad_case{R"({"routes":{"r":{"targets":[{"region":"us-east-1","tier":"on-demand"}]}}})",
                 "routes.r.targets[0].model_id: is required"},
        bad_case{R"({"regions":{"us-east-1":{}},"routes":{"r":{"targets":[
                   {"region":"eu-west-1","tier":"on-demand","model_id":"m"}]}}})",
                 "routes.r.targets[0].region: \"eu-west-1\" is not in regions"},
        bad_case{R"({"routes":{"r":{"targets":[
                   {"region":"us-east-1","tier":"spot","model_id":"m"}]}}})",
                 "routes.r.targets[0].tier"},
        bad_case{R"({"routes":{"r":{"targets":[
                   {"region":"us-east-1","tier":"provisioned","model_id":"m"}]}}})",
                 "needs a provisioned-model ARN"},
        bad_case{R"({"routes":{"r":{"targets":[{"region":"us-east-1","tier":"provisioned",
                   "model_id":"arn:aws:bedrock:eu-west-1:1:provisioned-model/p"}]}}})",
                 "the ARN is in region \"eu-west-1\""},
        bad_case{R"({"routes":{"r":{"targets":[{"region":"us-east-1","tier":"on-demand",
                   "model_id":"m","service_tier":"cheap"}]}}})",
                 "routes.r.targets[0].service_tier"},
        bad_case{R"({"routes":{"r":{"targets":[{"region":"us-east-1","tier":"on-demand",
                   "model_id":"m","weight":2}]}}})",
                 "routes.r.targets[0].weight: unknown key"},
        bad_case{R"({"routes":{"r":{"targets":[{"region":"us-east-1","tier":"batch",
                   "model_id":"m"}]}}})",
                 "routes.r.targets[0].tier: batch needs the batch section"},
        bad_case{R"({"batch":{"role_arn":"arn:aws:iam::1:role/r","spool_dir":"/s"}})",
                 "batch.bucket: is required"},
        bad_case{R"({"batch":{"bucket":"Bad_Bucket","role_arn":"arn:aws:iam::1:role/r",
                   "spool_dir":"/s"}})",
                 "batch.bucket"},
        bad_case{R"({"batch":{"bucket":"b-1","role_arn":"admin","spool_dir":"/s"}})",
                 "batch.role_arn"},
        bad_case{R"({"batch":{"bucket":"b-1","role_arn":"arn:aws:iam::1:role/r",
                   "spool_dir":"/s","underfull":"drop"}})",
                 "batch.underfull"},
        bad_case{R"({"batch":{"bucket":"b-1","role_arn":"arn:aws:iam::1:role/r",
                   "spool_dir":"/s","max_wait_s":0}})",
                 "batch.max_wait_s"},
        bad_case{R"({"regions":{"us-east-1":{"s3_endpoint":"ftp://x"}}})",
                 "regions.us-east-1.s3_endpoint"},
        bad_case{R"({"credentials":{"source":"vault"}})", "credentials.source"},
        bad_case{R"({"credentials":{"source":"imds","profile":"x"}})", "credentials.profile"},
        bad_case{R"({"credentials":{"sorce":"imds"}})", "credentials.sorce: unknown key"},
        bad_case{R"({"auth":{"mode":"basic"}})", "auth.mode"},
        bad_case{R"({"auth":{"token_file":"/k"}})", "auth.token_file"},
        bad_case{R"({"shutdown_grace_s":-1})", "shutdown_grace_s"},
        // Without default_region, the built-in one must still be among the allowed regions.
        bad_case{R"({"regions":{"eu-west-1":{}}})",
                 "default_region: \"us-east-1\" is not in regions"},
        bad_case{R"({"threads":257})", "threads: must be an integer between 0 and 256"},
        bad_case{R"({"control_plane":{"cache_s":3601}})", "control_plane.cache_s"},
        // Keys are read in a fixed order, not the document's: the first one read is reported.
        bad_case{R"({"threads":-1,"upstream":[]})", "upstream: must be an object"}));

TEST(config, retry_and_rate_limits_as_in_issue_4) {
    auto d = parse_config("{}");
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->retry.max_attempts, 3);
    EXPECT_EQ(d->retry.base_delay.count(), 100);
    EXPECT_EQ(d->retry.max_delay.count(), 20000);
    EXPECT_TRUE(d->rate_limits.empty());

    auto c = parse_config(R"({
      "retry": { "max_attempts": 1, "base_delay_ms": 250, "max_delay_ms": 5000 },
      "rate_limits": { "anthropic.claude-3-5-sonnet-20240620-v1:0": { "rpm": 50, "tpm": 200000 },
                       "*": { "rpm": 1000 } } })");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->retry.max_attempts, 1);
    EXPECT_EQ(c->retry.base_delay.count(), 250);
    EXPECT_EQ(c->retry.max_delay.count(), 5000);
    ASSERT_EQ(c->rate_limits.size(), 2u);
    const auto& claude = c->rate_limits.at("anthropic.claude-3-5-sonnet-20240620-v1:0");
    EXPECT_EQ(claude.rpm, 50u);
    EXPECT_EQ(claude.tpm, 200000u);
    EXPECT_EQ(c->rate_limits.at("*").rpm, 1000u);
    EXPECT_EQ(c->rate_limits.at("*").tpm, 0u);  // no token limit for the others
}

TEST(config, region_names) {
    using bgw::config::is_region_name;
    EXPECT_TRUE(is_region_name("us-east-1"));
    EXPECT_TRUE(is_region_name("ap-southeast-4"));
    EXPECT_TRUE(is_region_name("us-gov-west-1"));
    EXPECT_FALSE(is_region_name("us-east-"));
    EXPECT_FALSE(is_region_name("useast-1"));
    EXPECT_FALSE(is_region_name("us--east-1"));
    EXPECT_FALSE(is_region_name("us-east-12"));
    EXPECT_FALSE(is_region_name("us-east-1.evil.com"));
    EXPECT_FALSE(is_region_name("u1-east-1"));
}

TEST(config, endpoint_override) {
    auto ep =
        bgw::config::parse_endpoint("https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com");
    ASSERT_TRUE(ep);
    EXPECT_TRUE(ep->tls);
    EXPECT_EQ(ep->port, 443);
    EXPECT_EQ(ep->host_header, "vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com");
    auto v6 = bgw::config::parse_endpoint("http://[::1]:9000/");
    ASSERT_TRUE(v6);
    EXPECT_EQ(v6->host, "::1");
    EXPECT_EQ(v6->host_header, "[::1]:9000");
    EXPECT_FALSE(bgw::config::parse_endpoint("http://user:pw@host:1"));
    EXPECT_FALSE(bgw::config::parse_endpoint("http://host:1?x=1"));
}

TEST(config, routes_as_in_issue_5) {
    auto c = parse_config(R"({
      "regions": { "us-east-1": {}, "eu-west-1": {} },
      "routes": { "claude-prod": { "targets": [
        { "region": "us-east-1", "tier": "provisioned",
          "model_id": "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt1" },
        { "region": "us-east-1", "tier": "on-demand",
          "model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0" },
        { "region": "eu-west-1", "tier": "on-demand",
          "model_id": "anthropic.claude-3-5-sonnet-20240620-v1:0", "service_tier": "flex" } ] } } })");
    ASSERT_TRUE(c) << c.error().message;
    const auto& targets = c->routes.at("claude-prod").targets;
    ASSERT_EQ(targets.size(), 3u);
    EXPECT_EQ(targets[0].tier, bgw::config::tier::provisioned);
    EXPECT_EQ(targets[0].region, "us-east-1");
    EXPECT_EQ(targets[1].tier, bgw::config::tier::on_demand);
    EXPECT_EQ(targets[2].region, "eu-west-1");
    EXPECT_EQ(targets[2].service_tier, "flex");
    EXPECT_EQ(targets[1].service_tier, "");
}

TEST(config, batch_section_and_service_endpoints) {
    auto c = parse_config(R"({
      "regions": { "us-east-1": { "control_endpoint": "http://127.0.0.1:9002",
                                  "s3_endpoint": "http://127.0.0.1:9003" }, "eu-west-1": {} },
      "batch": { "bucket": "my-bucket", "prefix": "gw/batch", "role_arn": "arn:aws:iam::1:role/b",
                 "spool_dir": "/var/spool/bgw", "min_records": 100, "max_wait_s": 0.5,
                 "underfull": "on-demand", "poll_interval_s": 2 } })");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_TRUE(c->batch.enabled);
    EXPECT_EQ(c->batch.prefix, "gw/batch");
    EXPECT_EQ(c->batch.max_wait.count(), 500);
    EXPECT_EQ(c->batch.poll_interval.count(), 2000);
    EXPECT_TRUE(c->batch.underfull_on_demand);
    EXPECT_EQ(c->control_endpoints.at("us-east-1").port, 9002);
    EXPECT_EQ(c->s3_endpoints.at("us-east-1").port, 9003);
    EXPECT_EQ(c->control_endpoints.at("eu-west-1").host, "bedrock.eu-west-1.amazonaws.com");
    EXPECT_EQ(c->s3_endpoints.at("eu-west-1").host, "s3.eu-west-1.amazonaws.com");
    auto d = parse_config("{}");
    ASSERT_TRUE(d);
    EXPECT_FALSE(d->batch.enabled);
    EXPECT_EQ(d->s3_endpoints.size(), d->regions.size());
    ASSERT_TRUE(bgw::config::apply_endpoint_env(*d, "http://127.0.0.1:7000", ""));
    EXPECT_EQ(d->s3_endpoints.at("ap-south-1").port, 7000);
    EXPECT_EQ(d->control_endpoints.at("ap-south-1").port, 443);
    EXPECT_FALSE(bgw::config::apply_endpoint_env(*d, "", "not a url"));
}

TEST(config, credentials_and_auth) {
    auto c = parse_config(R"({"credentials":{"profile":"dev"},
                              "auth":{"mode":"bearer","token_file":"/run/secrets/key"}})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->credentials.source, "profile");  // a profile alone pins the profile source
    EXPECT_EQ(c->credentials.profile, "dev");
    EXPECT_TRUE(c->auth.bearer);
    EXPECT_EQ(c->auth.token_file, "/run/secrets/key");
    auto d = parse_config("{}");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->credentials.source, "");  // the SDKs' chain
    EXPECT_FALSE(d->auth.bearer);
}

TEST(config, shutdown_grace) {
    auto d = parse_config("{}");
    ASSERT_TRUE(d);
    EXPECT_EQ(d->shutdown_grace.count(), 30000);
    auto c = parse_config(R"({"shutdown_grace_s":2.5})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->shutdown_grace.count(), 2500);
}

}  // namespace

namespace {

TEST(config, admin_listen_log_format_and_prices) {
    auto c = parse_config(R"({"admin_listen": "127.0.0.1:9090", "log_format": "text",
      "prices": {"anthropic.claude-3-haiku-20240307-v1:0": {"input_per_1k": 0.00025,
                                                           "output_per_1k": 0.00125},
                 "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pt1":
                     {"model_unit_hour": 39.6, "model_units": 2}}})");
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(c->admin_listen);
    EXPECT_EQ(c->admin_listen->host, "127.0.0.1");
    EXPECT_EQ(c->admin_listen->port, 9090);
    EXPECT_EQ(c->log_format, "text");
    const auto* haiku = bgw::config::find_price(*c, "anthropic.claude-3-haiku-20240307-v1:0", "x");
    ASSERT_NE(haiku, nullptr);
    using bgw::config::tier;
    EXPECT_DOUBLE_EQ(bgw::config::token_cost_usd(*haiku, tier::on_demand, 2000, 1000),
                     2 * 0.00025 + 0.00125);
    EXPECT_DOUBLE_EQ(bgw::config::token_cost_usd(*haiku, tier::batch, 2000, 1000),
                     (2 * 0.00025 + 0.00125) / 2);
    EXPECT_DOUBLE_EQ(bgw::config::token_cost_usd(*haiku, tier::provisioned, 2000, 1000), 0);
    // The client's name is the fallback (a route name priced as a whole).
    EXPECT_EQ(bgw::config::find_price(*c, "unknown", "anthropic.claude-3-haiku-20240307-v1:0"),
              haiku);
    EXPECT_EQ(bgw::config::find_price(*c, "unknown", "also-unknown"), nullptr);
    auto names = bgw::config::named_models(*c);
    EXPECT_TRUE(names.contains("anthropic.claude-3-haiku-20240307-v1:0"));
}

TEST(config, bad_admin_listen_log_format_and_prices_name_the_key) {
    for (const auto& b : {
             bad_case{R"({"admin_listen": "nope"})", "admin_listen: must be host:port"},
             bad_case{R"({"admin_listen": 9090})", "admin_listen: must be a string"},
             bad_case{R"({"log_format": "yaml"})", "log_format: must be json or text"},
             bad_case{R"({"prices": {"m": {"input_per_1k": -1}}})",
                      "prices.m.input_per_1k: must be a number"},
             bad_case{R"({"prices": {"m": {"input_per_1k": "0.1"}}})",
                      "prices.m.input_per_1k: must be a number"},
             bad_case{R"({"prices": {"m": {"per_token": 1}}})", "prices.m.per_token: unknown key"},
             bad_case{R"({"prices": {"m": {"model_unit_hour": 39.6}}})",
                      "prices.m: a provisioned price needs both"},
             bad_case{R"({"prices": []})", "prices: must be an object"},
         }) {
        auto c = parse_config(b.json);
        ASSERT_FALSE(c) << b.json;
        EXPECT_NE(c.error().message.find(b.must_mention), std::string::npos)
            << b.json << " -> " << c.error().message;
    }
}

TEST(config, overrides_name_their_source) {
    auto c = parse_config("{}");
    ASSERT_TRUE(c);
    ASSERT_TRUE(bgw::config::apply_override(*c, "listen", "0.0.0.0:9000", "--listen"));
    EXPECT_EQ(c->listen_host, "0.0.0.0");
    EXPECT_EQ(c->listen_port, 9000);
    ASSERT_TRUE(bgw::config::apply_override(*c, "listen", "[::1]:0", "--listen"));
    EXPECT_EQ(c->listen_host, "::1");
    ASSERT_TRUE(bgw::config::apply_override(*c, "log_level", "debug", "BEDROCK_GATEWAY_LOG_LEVEL"));
    EXPECT_EQ(c->log_level, "debug");
    auto bad = bgw::config::apply_override(*c, "listen", "8080", "BEDROCK_GATEWAY_LISTEN");
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().message.rfind("BEDROCK_GATEWAY_LISTEN: must be host:port", 0), 0u)
        << bad.error().message;
    auto level = bgw::config::apply_override(*c, "log_level", "loud", "--log-level");
    ASSERT_FALSE(level);
    EXPECT_EQ(level.error().message.rfind("--log-level: must be one of", 0), 0u);
    EXPECT_EQ(c->log_level, "debug");  // a refused override changes nothing
}

TEST(config, restart_only_changes_names_what_a_reload_cannot_apply) {
    auto a = parse_config(R"({"listen": "127.0.0.1:8080", "retry": {"max_attempts": 3}})");
    ASSERT_TRUE(a);
    auto b = parse_config(R"({"listen": "127.0.0.1:8080", "retry": {"max_attempts": 5},
                             "log_level": "debug", "rate_limits": {"*": {"rpm": 10}}})");
    ASSERT_TRUE(b);
    EXPECT_TRUE(bgw::config::restart_only_changes(*a, *b).empty());
    auto c = parse_config(R"({"listen": "127.0.0.1:8081", "threads": 4,
                             "upstream": {"ca_file": "/x.pem"}})");
    ASSERT_TRUE(c);
    EXPECT_EQ(bgw::config::restart_only_changes(*a, *c),
              (std::vector<std::string>{"listen", "threads", "upstream.ca_file"}));
}

}  // namespace

namespace {

TEST(config, limits_for_hostile_clients) {
    auto c = parse_config(R"({"limits": {"max_header_count": 50, "max_target_bytes": 4096,
        "header_timeout_ms": 2000, "max_connections": 100, "max_streams": 10},
        "upstream": {"max_response_header_bytes": 32768}})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->limits.max_header_count, 50u);
    EXPECT_EQ(c->limits.max_target_bytes, 4096u);
    EXPECT_EQ(c->limits.header_timeout.count(), 2000);
    EXPECT_EQ(c->limits.max_connections, 100u);
    EXPECT_EQ(c->limits.max_streams, 10u);
    EXPECT_EQ(c->upstream.max_response_header_bytes, 32768u);
    auto defaults = parse_config("{}");
    ASSERT_TRUE(defaults);
    EXPECT_EQ(defaults->limits.header_timeout.count(), 10000);
    EXPECT_EQ(defaults->limits.max_streams, 4096u);
    for (const auto& b :
         {bad_case{R"({"limits": {"max_connections": 0}})",
                   "limits.max_connections: must be an integer between 1"},
          bad_case{R"({"limits": {"header_timeout_ms": 0}})", "limits.header_timeout_ms"},
          bad_case{R"({"limits": {"max_target_bytes": 10}})",
                   "limits.max_target_bytes: must be an integer between 256"}}) {
        auto r = parse_config(b.json);
        ASSERT_FALSE(r) << b.json;
        EXPECT_NE(r.error().message.find(b.must_mention), std::string::npos) << r.error().message;
    }
}

}  // namespace

namespace {

// Any 64 hex digits stand for a hash here.
constexpr const char* hash_one = "0bfb0e1cde6d0d0e5b4b1b0bc83fb1b7e6f3a8a6b1b2d0b2c0f1f6b3a4d5e6f7";

TEST(config, caller_keys_and_exposure) {
    auto c = parse_config(std::string(R"({"listen": "0.0.0.0:8080",
        "regions": {"us-east-1": {}, "eu-west-1": {}},
        "caller_keys": {"app": {"sha256": ")") +
                          hash_one + R"(",
            "models": ["claude"], "regions": ["eu-west-1"], "rpm": 10, "tpm": 1000}}})");
    ASSERT_TRUE(c) << c.error().message;
    const auto& key = c->caller_keys.at("app");
    EXPECT_EQ(key.sha256[0], 0x0b);
    EXPECT_EQ(key.sha256[31], 0xf7);
    EXPECT_EQ(key.models, std::vector<std::string>{"claude"});
    EXPECT_EQ(key.regions, std::vector<std::string>{"eu-west-1"});
    EXPECT_EQ(key.limit.rpm, 10u);
    EXPECT_TRUE(bgw::config::check_exposure(*c));  // keys guard it

    auto open = parse_config(R"({"listen": "0.0.0.0:8080"})");
    ASSERT_TRUE(open);
    auto refused = bgw::config::check_exposure(*open);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("not a loopback address"), std::string::npos);
    auto allowed = parse_config(R"({"listen": "0.0.0.0:8080", "allow_unauthenticated": true})");
    ASSERT_TRUE(allowed);
    EXPECT_TRUE(bgw::config::check_exposure(*allowed));
    for (const char* loopback : {"127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080"}) {
        auto l = parse_config(std::string(R"({"listen": ")") + loopback + "\"}");
        ASSERT_TRUE(l) << loopback;
        EXPECT_TRUE(bgw::config::check_exposure(*l)) << loopback;
    }

    for (
        const auto& b : {
            bad_case{R"({"caller_keys": {"a": {}}})", "caller_keys.a.sha256: is required"},
            bad_case{R"({"caller_keys": {"a": {"sha256": "secret"}}})",
                     "caller_keys.a.sha256: must be 64 hex digits"},
            bad_case{
                R"({"caller_keys": {"a": {"sha256": "0bfb0e1cde6d0d0e5b4b1b0bc83fb1b7e6f3a8a6b1b2d0b2c0f1f6b3a4d5e6f7", "regions": ["mars-1"]}}})",
                "caller_keys.a.regions: \"mars-1\" is not in regions"},
            bad_case{
                R"({"caller_keys": {"a": {"sha256": "0bfb0e1cde6d0d0e5b4b1b0bc83fb1b7e6f3a8a6b1b2d0b2c0f1f6b3a4d5e6f7"}, "b": {"sha256": "0BFB0E1CDE6D0D0E5B4B1B0BC83FB1B7E6F3A8A6B1B2D0B2C0F1F6B3A4D5E6F7"}}})",
                "caller_keys.b.sha256: is the same key as caller_keys.a"},
            bad_case{
                R"({"caller_keys": {"a": {"sha256": "0bfb0e1cde6d0d0e5b4b1b0bc83fb1b7e6f3a8a6b1b2d0b2c0f1f6b3a4d5e6f7", "key": "x"}}})",
                "caller_keys.a.key: unknown key"},
            bad_case{R"({"allow_unauthenticated": "yes"})", "allow_unauthenticated: must be"},
        }) {
        auto r = parse_config(b.json);
        ASSERT_FALSE(r) << b.json;
        EXPECT_NE(r.error().message.find(b.must_mention), std::string::npos) << r.error().message;
    }
}

// Issue 17: the hold budget, the cool-down cap and the default client deadline.
TEST(config, retry_hold_cooldown_and_deadline_keys) {
    auto d = parse_config("{}");
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_EQ(d->retry.max_hold.count(), 1000);
    EXPECT_EQ(d->retry.max_cooldown.count(), 10000);
    EXPECT_EQ(d->retry.default_timeout.count(), 0);

    auto c = parse_config(
        R"({"retry": {"max_hold_ms": 0, "max_cooldown_ms": 3000, "default_timeout_ms": 9000}})");
    ASSERT_TRUE(c) << c.error().message;
    EXPECT_EQ(c->retry.max_hold.count(), 0);  // never wait
    EXPECT_EQ(c->retry.max_cooldown.count(), 3000);
    EXPECT_EQ(c->retry.default_timeout.count(), 9000);
}

INSTANTIATE_TEST_SUITE_P(
    retry_hold,
    config_rejects,
    ::testing::Values(bad_case{R"({"retry":{"max_hold_ms":-1}})", "retry.max_hold_ms"},
                      bad_case{R"({"retry":{"max_hold_ms":"1s"}})", "retry.max_hold_ms"},
                      bad_case{R"({"retry":{"max_hold_ms":300001}})", "retry.max_hold_ms"},
                      bad_case{R"({"retry":{"max_cooldown_ms":0}})", "retry.max_cooldown_ms"},
                      bad_case{R"({"retry":{"base_delay_ms":500,"max_cooldown_ms":100}})",
                               "retry.max_cooldown_ms"},
                      bad_case{R"({"retry":{"default_timeout_ms":-5}})",
                               "retry.default_timeout_ms"}));

}  // namespace

TEST(config, shared_state_as_in_issue_20) {
    auto none = parse_config("{}");
    ASSERT_TRUE(none);
    EXPECT_FALSE(none->shared_state);  // without it nothing changes

    auto c = parse_config(R"({"shared_state": {"redis": {"url": "redis://127.0.0.1:6379/0",
        "password_file": "/run/secrets/redis", "key_prefix": "team-a:", "timeout_ms": 20,
        "fleet_size": 50}}})");
    ASSERT_TRUE(c) << c.error().message;
    ASSERT_TRUE(c->shared_state);
    EXPECT_EQ(c->shared_state->url, "redis://127.0.0.1:6379/0");
    EXPECT_EQ(c->shared_state->password_file, "/run/secrets/redis");
    EXPECT_FALSE(c->shared_state->tls);
    EXPECT_EQ(c->shared_state->key_prefix, "team-a:");
    EXPECT_EQ(c->shared_state->timeout, std::chrono::milliseconds(20));
    EXPECT_EQ(c->shared_state->fleet_size, 50u);

    auto d = parse_config(R"({"shared_state": {"redis": {"url": "rediss://redis.internal"}}})");
    ASSERT_TRUE(d) << d.error().message;
    EXPECT_TRUE(d->shared_state->tls);  // rediss:// is TLS
    EXPECT_EQ(d->shared_state->key_prefix, "bgw:");
    EXPECT_EQ(d->shared_state->timeout, std::chrono::milliseconds(5));
    EXPECT_EQ(d->shared_state->fleet_size, 0u);  // as observed

    // Redis is connected at start: a reload cannot change it.
    EXPECT_EQ(restart_only_changes(*none, *c), std::vector<std::string>{"shared_state"});
}

INSTANTIATE_TEST_SUITE_P(
    shared_state,
    config_rejects,
    ::testing::Values(
        bad_case{R"({"shared_state": {}})", "shared_state.redis: is required"},
        bad_case{R"({"shared_state": {"redis": {}}})", "shared_state.redis.url: is required"},
        bad_case{R"({"shared_state": {"redis": {"url": "http://x"}}})", "shared_state.redis.url"},
        bad_case{R"({"shared_state": {"redis": {"url": "redis://:hunter2@x"}}})", "password_file"},
        bad_case{R"({"shared_state": {"redis": {"url": "rediss://x", "tls": false}}})",
                 "shared_state.redis.tls"},
        bad_case{R"({"shared_state": {"redis": {"url": "redis://x", "ca_file": "/ca.pem"}}})",
                 "shared_state.redis.ca_file: needs TLS"},
        bad_case{R"({"shared_state": {"redis": {"url": "redis://x", "timeout_ms": 0}}})",
                 "shared_state.redis.timeout_ms"},
        bad_case{R"({"shared_state": {"redis": {"url": "redis://x", "fleet_size": 0}}})",
                 "shared_state.redis.fleet_size"},
        bad_case{R"({"shared_state": {"redis": {"url": "redis://x", "key_prefix": "a b"}}})",
                 "shared_state.redis.key_prefix"},
        bad_case{R"({"shared_state": {"redis": {"url": "redis://x", "pasword_file": "/p"}}})",
                 "shared_state.redis.pasword_file: unknown key"},
        bad_case{R"({"shared_state": {"memcached": {}}})", "shared_state.memcached: unknown key"}));
