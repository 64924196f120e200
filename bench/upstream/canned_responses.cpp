#include "canned_responses.hpp"

#include "bgw/aws/eventstream.hpp"

#include <array>
#include <cstdio>

namespace bgw::bench {
namespace {

// Fixed, as the answers are canned: real Bedrock sends a fresh id per request.
constexpr std::string_view request_id = "00000000-bench-4000-8000-000000000000";

/// `prefix` + filler text + `suffix`, exactly `bytes` long when that is possible.
std::string padded(std::string_view prefix, std::string_view suffix, std::size_t bytes) {
    std::string out(prefix);
    const std::size_t fixed = prefix.size() + suffix.size();
    // Words rather than one long run, so the text looks like what a model returns.
    constexpr std::string_view words = "lorem ipsum dolor sit amet consectetur adipiscing elit ";
    for (std::size_t i = 0; fixed + i < bytes; ++i) out.push_back(words[i % words.size()]);
    out.append(suffix);
    return out;
}

std::string hex(std::size_t n) {
    std::array<char, 20> buf{};
    const int len = std::snprintf(buf.data(), buf.size(), "%zx", n);
    return std::string(buf.data(), static_cast<std::size_t>(len));
}

std::string http_chunk(std::string_view frame) {
    return hex(frame.size()) + "\r\n" + std::string(frame) + "\r\n";
}

std::string base64(std::string_view in) {
    constexpr std::string_view alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const unsigned v = static_cast<unsigned char>(in[i]) << 16 |
                           static_cast<unsigned char>(in[i + 1]) << 8 |
                           static_cast<unsigned char>(in[i + 2]);
        out += alphabet[v >> 18 & 63];
        out += alphabet[v >> 12 & 63];
        out += alphabet[v >> 6 & 63];
        out += alphabet[v & 63];
    }
    if (const std::size_t rest = in.size() - i; rest > 0) {
        unsigned v = static_cast<unsigned char>(in[i]) << 16;
        if (rest == 2) v |= static_cast<unsigned char>(in[i + 1]) << 8;
        out += alphabet[v >> 18 & 63];
        out += alphabet[v >> 12 & 63];
        out += rest == 2 ? alphabet[v >> 6 & 63] : '=';
        out += '=';
    }
    return out;
}

stream_response make_stream(std::string_view extra_headers,
                            const std::vector<std::string>& frames) {
    stream_response r;
    r.head =
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/vnd.amazon.eventstream\r\n"
        "Transfer-Encoding: chunked\r\n"
        "x-amzn-RequestId: " +
        std::string(request_id) + "\r\n" + std::string(extra_headers) + "\r\n";
    for (const auto& f : frames) r.chunks.push_back(http_chunk(f));
    if (r.chunks.empty()) r.chunks.emplace_back();
    r.chunks.back() += "0\r\n\r\n";
    r.whole = r.head;
    for (const auto& c : r.chunks) r.whole += c;
    return r;
}

}  // namespace

std::string invoke_body(std::size_t bytes) {
    return padded(R"({"id":"msg_bench","type":"message","role":"assistant","model":"bench",)"
                  R"("content":[{"type":"text","text":")",
                  R"("}],"stop_reason":"end_turn","stop_sequence":null,)"
                  R"("usage":{"input_tokens":42,"output_tokens":7}})",
                  bytes);
}

std::string converse_body(std::size_t bytes) {
    return padded(R"({"output":{"message":{"role":"assistant","content":[{"text":")",
                  R"("}]}},"stopReason":"end_turn",)"
                  R"("usage":{"inputTokens":42,"outputTokens":7,"totalTokens":49},)"
                  R"("metrics":{"latencyMs":1}})",
                  bytes);
}

std::string json_response(std::string_view body) {
    return "HTTP/1.1 200 OK\r\n"
           "Content-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(body.size()) +
           "\r\n"
           "x-amzn-RequestId: " +
           std::string(request_id) +
           "\r\n"
           "X-Amzn-Bedrock-Input-Token-Count: 42\r\n"
           "X-Amzn-Bedrock-Output-Token-Count: 7\r\n"
           "X-Amzn-Bedrock-Invocation-Latency: 1\r\n"
           "\r\n" +
           std::string(body);
}

std::string not_found_response() {
    constexpr std::string_view body = R"({"message":"bench_upstream: unknown operation"})";
    return "HTTP/1.1 404 Not Found\r\n"
           "Content-Type: application/json\r\n"
           "x-amzn-ErrorType: UnknownOperationException\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

std::string bad_request_response() {
    constexpr std::string_view body =
        R"({"message":"bench_upstream: needs a Content-Length request, not a chunked one"})";
    return "HTTP/1.1 400 Bad Request\r\n"
           "Content-Type: application/json\r\n"
           "x-amzn-ErrorType: ValidationException\r\n"
           "Connection: close\r\n"
           "Content-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

stream_response converse_stream(unsigned events) {
    using aws::eventstream::bedrock_event;
    std::vector<std::string> frames;
    if (events == 0) return make_stream({}, frames);
    frames.push_back(bedrock_event("messageStart", R"({"role":"assistant"})"));
    const unsigned deltas = events >= 5 ? events - 4 : 0;
    for (unsigned i = 0; i < deltas; ++i) {
        frames.push_back(bedrock_event(
            "contentBlockDelta",
            R"({"contentBlockIndex":0,"delta":{"text":"token )" + std::to_string(i) + R"( "}})"));
    }
    frames.push_back(bedrock_event("contentBlockStop", R"({"contentBlockIndex":0})"));
    frames.push_back(bedrock_event("messageStop", R"({"stopReason":"end_turn"})"));
    auto metadata = bedrock_event("metadata", R"({"usage":{"inputTokens":42,"outputTokens":)" +
                                                  std::to_string(deltas) + R"(,"totalTokens":)" +
                                                  std::to_string(42 + deltas) +
                                                  R"(},"metrics":{"latencyMs":12}})");
    // Fewer than 5 events: the first ones, then metadata (a lone event is messageStart).
    if (events > 1) {
        frames.resize(events - 1);
        frames.push_back(std::move(metadata));
    } else {
        frames.resize(1);
    }
    return make_stream({}, frames);
}

stream_response invoke_stream(unsigned events) {
    using aws::eventstream::bedrock_event;
    std::vector<std::string> frames;
    auto chunk = [&](const std::string& model_json) {
        frames.push_back(bedrock_event("chunk", R"({"bytes":")" + base64(model_json) + "\"}"));
    };
    for (unsigned i = 0; i < events; ++i) {
        if (i + 1 == events) {
            chunk(R"({"type":"message_stop","amazon-bedrock-invocationMetrics":)"
                  R"({"inputTokenCount":42,"outputTokenCount":)" +
                  std::to_string(events) + R"(,"invocationLatency":12,"firstByteLatency":3}})");
        } else if (i == 0) {
            chunk(R"({"type":"message_start","message":{"role":"assistant","content":[]}})");
        } else {
            chunk(R"({"type":"content_block_delta","index":0,)"
                  R"("delta":{"type":"text_delta","text":"token )" +
                  std::to_string(i) + R"( "}})");
        }
    }
    return make_stream("X-Amzn-Bedrock-Content-Type: application/json\r\n", frames);
}

}  // namespace bgw::bench
