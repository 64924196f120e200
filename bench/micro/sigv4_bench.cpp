// SigV4 micro-benchmarks: what the gateway spends signing one request (issue 9 target: a 1 KiB
// request signed >= 300,000 times per second per core). Single-threaded, so items/s is per core.

#include "bgw/aws/signing_key_cache.hpp"
#include "bgw/aws/sigv4.hpp"
#include "bgw/config/config.hpp"
#include "bgw/routing/runtime_path.hpp"
#include "bgw/routing/upstream_request.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/beast/http/fields.hpp>

namespace {

using namespace std::chrono_literals;
namespace aws = bgw::aws;
namespace http = boost::beast::http;

const aws::credentials creds{"AKIDEXAMPLEBENCH0001", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                             ""};
const std::chrono::sys_seconds now =
    std::chrono::sys_days{std::chrono::year{2026} / 1 / 15} + 9h + 30min;
constexpr std::string_view wire_path = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke";

/// A 1 KiB Anthropic Messages body, as an app would send to InvokeModel.
std::string body_1kib() {
    std::string body = R"({"anthropic_version":"bedrock-2023-05-31","max_tokens":256,)"
                       R"("messages":[{"role":"user","content":")";
    const std::string tail = R"("}]})";
    while (body.size() + tail.size() < 1024) body += "word ";
    body.resize(1024 - tail.size());
    return body + tail;
}

/// The headers the gateway signs for that request (see routing/upstream_request.cpp).
std::vector<aws::header> signed_headers() {
    return {{"Host", "bedrock-runtime.us-east-1.amazonaws.com"},
            {"Content-Type", "application/json"},
            {"Accept", "application/json"},
            {"X-Amz-Date", aws::format_amz_date(now)}};
}

aws::signing_input input(const std::vector<aws::header>& headers, std::string_view hash) {
    return {.method = "POST",
            .wire_path = wire_path,
            .query = {},
            .headers = headers,
            .payload_sha256 = hash,
            .region = "us-east-1",
            .service = "bedrock",
            .time = now};
}

/// The gateway's signing work for a 1 KiB body: the body hash, then the signature with the
/// derived key from the cache (warm after the first request of the day, as in the gateway).
void sign_1kib_request(benchmark::State& state) {
    const std::string body = body_1kib();
    const auto headers = signed_headers();
    aws::signing_key_cache cache;
    for (auto _ : state) {
        const std::string hash = aws::sha256_hex(body);
        auto sig = aws::sign_v4(input(headers, hash), creds, &cache);
        benchmark::DoNotOptimize(sig);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(sign_1kib_request);

/// The same without the key cache: four more HMACs to derive the key each time.
void sign_1kib_request_uncached(benchmark::State& state) {
    const std::string body = body_1kib();
    const auto headers = signed_headers();
    for (auto _ : state) {
        const std::string hash = aws::sha256_hex(body);
        auto sig = aws::sign_v4(input(headers, hash), creds, nullptr);
        benchmark::DoNotOptimize(sig);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(sign_1kib_request_uncached);

/// Everything the gateway does to turn an accepted 1 KiB request into the signed upstream
/// request: header filtering, X-Amz-Date, body hash, signature (warm cache).
void prepare_upstream_request_1kib(benchmark::State& state) {
    const std::string body = body_1kib();
    auto cfg = bgw::config::parse_config(R"({"regions":{"us-east-1":{}}})");
    auto rt = bgw::routing::parse_runtime_target(
        http::verb::post, "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke");
    if (!cfg || !rt) {
        state.SkipWithError("setup failed");
        return;
    }
    http::fields incoming;
    incoming.set(http::field::host, "127.0.0.1:8080");
    incoming.set(http::field::content_type, "application/json");
    incoming.set(http::field::accept, "application/json");
    incoming.set(http::field::user_agent, "Boto3/1.34 md/Botocore#1.34");
    incoming.set("amz-sdk-invocation-id", "6d8f2c4e-0b7a-4f3e-9a51-2c7d8e9f0a1b");
    incoming.set("amz-sdk-request", "attempt=1; max=3");
    const auto& ep = cfg->regions.at("us-east-1");
    aws::signing_key_cache cache;
    for (auto _ : state) {
        auto up = bgw::routing::prepare_upstream_request(
            http::verb::post, *rt, incoming, body, {.endpoint = ep, .region = "us-east-1"},
            {.creds = creds, .now = now, .cache = &cache});
        benchmark::DoNotOptimize(up);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(prepare_upstream_request_1kib);

/// Stage 1 alone: the canonical request of that request.
void canonical_request(benchmark::State& state) {
    const std::string hash = aws::sha256_hex(body_1kib());
    const auto headers = signed_headers();
    for (auto _ : state) {
        auto creq = aws::canonical_request(input(headers, hash));
        benchmark::DoNotOptimize(creq);
    }
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(canonical_request);

/// The body hash alone, per byte (SHA-256 of a 1 KiB body).
void sha256_1kib(benchmark::State& state) {
    const std::string body = body_1kib();
    for (auto _ : state) {
        auto hash = aws::sha256_hex(body);
        benchmark::DoNotOptimize(hash);
    }
    state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(body.size()));
}
BENCHMARK(sha256_1kib);

}  // namespace
