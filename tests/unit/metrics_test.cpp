// The Prometheus registry: exact text for known observations, bounded model labels.

#include "bgw/obs/metrics.hpp"

#include <gtest/gtest.h>

namespace {

using bgw::obs::gauges;
using bgw::obs::metrics;

/// The value of the sample line that starts with `series ` (name and labels), or -1.
double sample(const std::string& text, const std::string& series) {
    auto at = text.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    at += series.size() + 2;
    return std::stod(text.substr(at, text.find('\n', at) - at));
}

TEST(metrics, counts_requests_by_their_labels) {
    metrics m;
    m.request("Converse", "us-east-1", "on-demand", "claude", 200);
    m.request("Converse", "us-east-1", "on-demand", "claude", 200);
    m.request("Converse", "eu-west-1", "on-demand", "claude", 429);
    auto text = m.render({});
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_requests_total{operation="Converse",region="us-east-1",tier="on-demand",model="claude",status="200"})"),
        2);
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_requests_total{operation="Converse",region="eu-west-1",tier="on-demand",model="claude",status="429"})"),
        1);
    EXPECT_NE(text.find("# TYPE bedrock_gateway_requests_total counter\n"), std::string::npos);
    EXPECT_EQ(text.back(), '\n');
}

TEST(metrics, histogram_buckets_are_cumulative_with_sum_and_count) {
    metrics m;
    m.upstream_latency("us-east-1", "InvokeModel", 0.004);
    m.upstream_latency("us-east-1", "InvokeModel", 0.2);
    m.upstream_latency("us-east-1", "InvokeModel", 100);  // beyond the last bound: +Inf only
    auto text = m.render({});
    const std::string b =
        R"(bedrock_gateway_upstream_latency_seconds_bucket{region="us-east-1",operation="InvokeModel",le=)";
    EXPECT_EQ(sample(text, b + R"("0.001"})"), 0);
    EXPECT_EQ(sample(text, b + R"("0.005"})"), 1);
    EXPECT_EQ(sample(text, b + R"("0.25"})"), 2);
    EXPECT_EQ(sample(text, b + R"("60"})"), 2);
    EXPECT_EQ(sample(text, b + R"("+Inf"})"), 3);
    EXPECT_DOUBLE_EQ(
        sample(
            text,
            R"(bedrock_gateway_upstream_latency_seconds_sum{region="us-east-1",operation="InvokeModel"})"),
        100.204);
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_upstream_latency_seconds_count{region="us-east-1",operation="InvokeModel"})"),
        3);
    EXPECT_NE(text.find("# TYPE bedrock_gateway_upstream_latency_seconds histogram"),
              std::string::npos);
}

TEST(metrics, tokens_cost_throttles_retries_and_failovers) {
    metrics m;
    m.tokens("us-east-1", "batch", "claude", 1000, 20);
    m.tokens("us-east-1", "batch", "claude", 500, 5);
    m.cost("us-east-1", "batch", "claude", 0.25);
    m.cost("us-east-1", "batch", "claude", 0.5);
    m.throttle("us-east-1", "claude", "upstream");
    m.throttle("us-east-1", "claude", "local");
    m.throttle("us-east-1", "claude", "local");
    m.retry();
    m.failover();
    m.failover();
    gauges g;
    g.inflight_requests = 3;
    g.credentials_expiry_seconds = 1800;
    g.provisioned_cost_usd[{"us-east-1", "arn:pt"}] = 12.5;
    g.batch_records = {{"queued", 4}, {"done", 2}};
    auto text = m.render(g);
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_tokens_total{direction="input",region="us-east-1",tier="batch",model="claude"})"),
        1500);
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_tokens_total{direction="output",region="us-east-1",tier="batch",model="claude"})"),
        25);
    EXPECT_DOUBLE_EQ(
        sample(
            text,
            R"(bedrock_gateway_estimated_cost_usd_total{region="us-east-1",tier="batch",model="claude"})"),
        0.75);
    EXPECT_DOUBLE_EQ(
        sample(
            text,
            R"(bedrock_gateway_estimated_cost_usd_total{region="us-east-1",tier="provisioned",model="arn:pt"})"),
        12.5);
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_throttles_total{region="us-east-1",model="claude",source="local"})"),
        2);
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_throttles_total{region="us-east-1",model="claude",source="upstream"})"),
        1);
    EXPECT_EQ(sample(text, "bedrock_gateway_retries_total"), 1);
    EXPECT_EQ(sample(text, "bedrock_gateway_failovers_total"), 2);
    EXPECT_EQ(sample(text, "bedrock_gateway_inflight_requests"), 3);
    EXPECT_EQ(sample(text, "bedrock_gateway_credentials_expiry_seconds"), 1800);
    EXPECT_EQ(sample(text, R"(bedrock_gateway_batch_records{state="queued"})"), 4);
    // Keys that never expire have no expiry sample at all.
    EXPECT_EQ(sample(m.render({}), "bedrock_gateway_credentials_expiry_seconds"), -1);
}

TEST(metrics, model_labels_are_bounded_but_config_models_always_keep_their_name) {
    metrics m({"configured"}, 2);
    EXPECT_EQ(m.model_label("a"), "a");
    EXPECT_EQ(m.model_label("b"), "b");
    EXPECT_EQ(m.model_label("c"), "other");
    EXPECT_EQ(m.model_label("a"), "a");
    EXPECT_EQ(m.model_label("configured"), "configured");
    m.know_models({"reloaded"});
    EXPECT_EQ(m.model_label("reloaded"), "reloaded");
    EXPECT_EQ(m.model_label("d"), "other");
    for (int i = 0; i < 1000; ++i)
        m.request("InvokeModel", "r", "on-demand", std::to_string(i), 200);
    auto text = m.render({});
    EXPECT_EQ(
        sample(
            text,
            R"(bedrock_gateway_requests_total{operation="InvokeModel",region="r",tier="on-demand",model="other",status="200"})"),
        1000);
}

TEST(metrics, label_values_are_escaped) {
    metrics m;
    m.request("InvokeModel", "r", "on-demand", "a\"b\\c\nd", 200);
    auto text = m.render({});
    EXPECT_NE(text.find(R"(model="a\"b\\c\nd")"), std::string::npos) << text;
}

TEST(metrics, label_values_are_utf8_whatever_they_were_given) {
    metrics m;
    m.request("InvokeModel", "r", "on-demand", "a\xff\xfe", 200);
    auto text = m.render({});
    EXPECT_EQ(text.find('\xff'), std::string::npos);
    EXPECT_NE(text.find("model=\"a\xEF\xBF\xBD\xEF\xBF\xBD\""), std::string::npos) << text;
}

TEST(metrics, accept_errors_and_session_failures_are_counted) {
    metrics m;
    auto text = m.render({});
    EXPECT_NE(text.find("bedrock_gateway_accept_errors_total 0"), std::string::npos);
    EXPECT_NE(text.find("bedrock_gateway_session_failures_total 0"), std::string::npos);
    m.accept_failed();
    m.session_failed();
    text = m.render({});
    EXPECT_NE(text.find("bedrock_gateway_accept_errors_total 1"), std::string::npos);
    EXPECT_NE(text.find("bedrock_gateway_session_failures_total 1"), std::string::npos);
}

}  // namespace
