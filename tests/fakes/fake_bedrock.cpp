#include "fakes/fake_bedrock.hpp"

#include "bgw/aws/eventstream.hpp"
#include "bgw/aws/sign_request.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <utility>

#include "fakes/fake_batch.hpp"
#include "fakes/independent_sigv4.hpp"
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace bgw::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

// The gateway's own net/asio.hpp is not ours to depend on; the same idiom, spelled locally.
inline constexpr auto use_nothrow = net::as_tuple(net::use_awaitable);

constexpr std::string_view error_type_suffix =
    ":http://internal.amazon.com/coral/com.amazon.bedrock/";
constexpr std::string_view fake_account = "123456789012";

std::string to_lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) ==
                      std::tolower(static_cast<unsigned char>(y));
           });
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    for (;;) {
        auto pos = s.find(sep);
        parts.push_back(s.substr(0, pos));
        if (pos == std::string_view::npos) return parts;
        s.remove_prefix(pos + 1);
    }
}

std::string random_hex(std::size_t n) {
    // Request ids only need to be unique within a test run, not unpredictable.
    thread_local std::mt19937_64 rng{std::random_device{}()};
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(n, '0');
    for (auto& c : out) c = digits[rng() & 0xf];
    return out;
}

std::string make_uuid() {
    auto h = random_hex(32);
    h[12] = '4';                                                  // version 4
    h[16] = "89ab"[std::stoi(h.substr(16, 1), nullptr, 16) & 3];  // RFC 4122 variant
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
           "-" + h.substr(20);
}

using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

void write_string(json_writer& w, std::string_view s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

void write_optional(json_writer& w, const std::optional<std::string>& s) {
    if (s)
        write_string(w, *s);
    else
        w.Null();
}

fake_response json_response(std::string body) {
    fake_response r;
    r.headers.push_back({"Content-Type", "application/json"});
    r.body = std::move(body);
    return r;
}

// Crude but stable token estimates: tests compare against what the fake reported, not a model.
std::uint64_t estimate_tokens(std::size_t bytes) { return std::max<std::uint64_t>(1, bytes / 4); }

// --- default routes --------------------------------------------------------------------------

fake_response invoke(const recorded_request& req, std::string_view model_id) {
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("modelId");
    write_string(w, model_id);
    w.Key("wirePath");
    write_string(w, req.wire_path);
    w.Key("bodySha256");
    write_string(w, req.body_sha256);
    w.Key("bodyLength");
    w.Uint64(req.body.size());
    w.Key("contentType");
    write_optional(w, req.header("content-type"));
    w.Key("accept");
    write_optional(w, req.header("accept"));
    w.Key("serviceTier");
    write_optional(w, req.header("x-amzn-bedrock-service-tier"));
    w.Key("region");
    write_string(w, req.region);
    w.EndObject();
    auto r = json_response(sb.GetString());
    r.headers.push_back(
        {"X-Amzn-Bedrock-Input-Token-Count", std::to_string(estimate_tokens(req.body.size()))});
    r.headers.push_back({"X-Amzn-Bedrock-Output-Token-Count", "7"});
    r.headers.push_back({"X-Amzn-Bedrock-Invocation-Latency", "1"});
    // The service model says the response echoes the tier that was actually used.
    if (auto tier = req.header("x-amzn-bedrock-service-tier"))
        r.headers.push_back({"X-Amzn-Bedrock-Service-Tier", *tier});
    return r;
}

fake_response converse(const recorded_request& req) {
    rapidjson::Document doc;
    doc.Parse(req.body.data(), req.body.size());
    if (doc.HasParseError() || !doc.IsObject())
        return make_error(400, "ValidationException",
                          "Malformed input request, please reformat your input and try again.");
    auto messages = doc.FindMember("messages");
    if (messages == doc.MemberEnd() || !messages->value.IsArray())
        return make_error(400, "ValidationException",
                          "The model returned the following errors: messages is required.");
    std::optional<std::string> text;
    for (const auto& m : messages->value.GetArray()) {
        if (!m.IsObject()) continue;
        auto role = m.FindMember("role");
        auto content = m.FindMember("content");
        if (role == m.MemberEnd() || !role->value.IsString() ||
            std::string_view(role->value.GetString()) != "user" || content == m.MemberEnd() ||
            !content->value.IsArray())
            continue;
        std::string joined;
        for (const auto& block : content->value.GetArray()) {
            if (!block.IsObject()) continue;
            auto t = block.FindMember("text");
            if (t != block.MemberEnd() && t->value.IsString())
                joined.append(t->value.GetString(), t->value.GetStringLength());
        }
        text = std::move(joined);  // keep going: the echo is of the *last* user message
    }
    if (!text)
        return make_error(400, "ValidationException",
                          "A conversation must start with a user message.");

    auto in_tokens = estimate_tokens(req.body.size());
    auto out_tokens = estimate_tokens(text->size());
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("output");
    w.StartObject();
    w.Key("message");
    w.StartObject();
    w.Key("role");
    w.String("assistant");
    w.Key("content");
    w.StartArray();
    w.StartObject();
    w.Key("text");
    write_string(w, *text);
    w.EndObject();
    w.EndArray();
    w.EndObject();
    w.EndObject();
    w.Key("stopReason");
    w.String("end_turn");
    w.Key("usage");
    w.StartObject();
    w.Key("inputTokens");
    w.Uint64(in_tokens);
    w.Key("outputTokens");
    w.Uint64(out_tokens);
    w.Key("totalTokens");
    w.Uint64(in_tokens + out_tokens);
    w.EndObject();
    w.Key("metrics");
    w.StartObject();
    w.Key("latencyMs");
    w.Uint(1);
    w.EndObject();
    w.EndObject();
    return json_response(sb.GetString());
}

fake_response count_tokens(const recorded_request& req) {
    return json_response("{\"inputTokens\":" + std::to_string(estimate_tokens(req.body.size())) +
                         "}");
}

fake_response apply_guardrail() {
    return json_response(
        R"({"usage":{"topicPolicyUnits":0,"contentPolicyUnits":1,"wordPolicyUnits":0,)"
        R"("sensitiveInformationPolicyUnits":0,"sensitiveInformationPolicyFreeUnits":0,)"
        R"("contextualGroundingPolicyUnits":0},"action":"NONE","actionReason":"No action.",)"
        R"("outputs":[],"assessments":[{}]})");
}

std::string async_invoke_arn(std::string_view region) {
    return "arn:aws:bedrock:" + std::string(region) + ":" + std::string(fake_account) +
           ":async-invoke/" + random_hex(12);
}

fake_response start_async_invoke(const recorded_request& req) {
    rapidjson::Document doc;
    doc.Parse(req.body.data(), req.body.size());
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("modelId"))
        return make_error(400, "ValidationException",
                          "modelId, modelInput and outputDataConfig are required.");
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("invocationArn");
    write_string(w, async_invoke_arn(req.region));
    w.EndObject();
    return json_response(sb.GetString());
}

fake_response get_async_invoke(const recorded_request& req, std::string_view arn) {
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("invocationArn");
    write_string(w, arn);
    w.Key("modelArn");
    write_string(w, "arn:aws:bedrock:" + req.region + "::foundation-model/amazon.nova-reel-v1:0");
    w.Key("status");
    w.String("InProgress");
    w.Key("submitTime");
    w.String("2024-11-20T17:45:23Z");
    w.Key("outputDataConfig");
    w.StartObject();
    w.Key("s3OutputDataConfig");
    w.StartObject();
    w.Key("s3Uri");
    w.String("s3://fake-bedrock-output/async/");
    w.EndObject();
    w.EndObject();
    w.EndObject();
    return json_response(sb.GetString());
}

// Accepted requests per model id, for `fake-flaky-*`. One per fake, so two fakes in one test
// process (or one test after another) never see each other's counts.
class request_counter {
public:
    /// How many requests with `key` came before this one (which is counted too).
    std::uint64_t next(std::string_view key) {
        std::lock_guard lock(mutex_);
        auto it = counts_.find(key);
        if (it == counts_.end()) it = counts_.emplace(std::string(key), 0).first;
        return it->second++;
    }

private:
    std::mutex mutex_;
    std::map<std::string, std::uint64_t, std::less<>> counts_;
};

// What belongs to the fake whose behaviour is running on this thread: its flaky counts, its S3
// store and batch jobs, its options, and what the behaviour reports back about the request. A
// behaviour sees only the request (and tests wrap default_behaviour in their own), but it always
// runs inside handle() on its fake's own thread, which points this at that fake for the duration.
struct request_context {
    request_counter* counter = nullptr;
    detail::fake_store* store = nullptr;
    const fake_options* options = nullptr;
    bool created_job = false;  // out: CreateModelInvocationJob really created a job
};
thread_local request_context* current_context = nullptr;

// Outside a fake there is nothing to count against: every request is the first.
std::uint64_t count_request(std::string_view model_id) {
    return current_context && current_context->counter ? current_context->counter->next(model_id)
                                                       : 0;
}

// The other shape of AWS JSON errors: no x-amzn-ErrorType, the code only in the body's `__type`
// (botocore takes what follows the '#').
fake_response make_body_error(unsigned status, std::string_view code, std::string_view message) {
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("__type");
    write_string(w, "com.amazon.bedrock#" + std::string(code));
    w.Key("message");
    write_string(w, message);
    w.EndObject();
    auto r = json_response(sb.GetString());
    r.status = status;
    return r;
}

// What a scripted model id asks for: an error now, or the normal answer after a delay.
struct script {
    std::optional<fake_response> error;
    std::chrono::milliseconds delay{0};
};

// `<number>-<rest>`: the number and what follows the '-'.
std::optional<std::pair<unsigned, std::string_view>> number_then_dash(std::string_view s) {
    unsigned n = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc{} || end == s.data() + s.size() || *end != '-') return std::nullopt;
    return std::pair{n, s.substr(static_cast<std::size_t>(end - s.data()) + 1)};
}

bool error_status(unsigned status) { return status >= 400 && status <= 599; }

bool nonempty_all(std::string_view s, bool (*pred)(char)) {
    return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

bool alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool tag_char(char c) { return alnum(c) || c == '.' || c == '_'; }

script bad_script(std::string_view what) {
    return {make_error(400, "ValidationException",
                       "fake-bedrock: bad scripted " + std::string(what) + " id")};
}

// `fake-error-<status>-<Code>`, `fake-errorbody-<status>-<Code>`,
// `fake-flaky-<n>-<status>-<Code>[-<tag>]` and `fake-delay-<ms>`; an ordinary model id gives an
// empty script. A flaky id is counted here, so call this once per request.
script parse_script(std::string_view model_id) {
    // A provisioned-model ARN scripts the fake with its resource id:
    // `arn:aws:bedrock:REGION:ACCOUNT:provisioned-model/fake-error-429-ThrottlingException`.
    if (auto at = model_id.find(":provisioned-model/");
        model_id.starts_with("arn:") && at != std::string_view::npos)
        model_id.remove_prefix(at + std::string_view(":provisioned-model/").size());
    constexpr std::string_view error_prefix = "fake-error-";
    constexpr std::string_view errorbody_prefix = "fake-errorbody-";
    constexpr std::string_view flaky_prefix = "fake-flaky-";
    constexpr std::string_view delay_prefix = "fake-delay-";
    if (model_id.starts_with(error_prefix) || model_id.starts_with(errorbody_prefix)) {
        const bool in_body = model_id.starts_with(errorbody_prefix);
        auto sc =
            number_then_dash(model_id.substr((in_body ? errorbody_prefix : error_prefix).size()));
        if (!sc || !error_status(sc->first) || sc->second.empty()) return bad_script("error");
        auto [status, code] = *sc;
        auto message = "fake-bedrock scripted " + std::string(code);
        return {in_body ? make_body_error(status, code, message)
                        : make_error(status, code, message)};
    }
    if (model_id.starts_with(flaky_prefix)) {
        // The Code has no '-' in it (AWS codes are CamelCase words), so the first '-' after it
        // starts the tag.
        auto n = number_then_dash(model_id.substr(flaky_prefix.size()));
        auto sc = n ? number_then_dash(n->second) : std::nullopt;
        if (!sc || n->first > 1000 || !error_status(sc->first)) return bad_script("flaky");
        auto dash = sc->second.find('-');
        auto code = sc->second.substr(0, dash);
        if (!nonempty_all(code, alnum) || (dash != std::string_view::npos &&
                                           !nonempty_all(sc->second.substr(dash + 1), tag_char)))
            return bad_script("flaky");
        if (count_request(model_id) >= n->first) return {};
        return {make_error(sc->first, code, "fake-bedrock scripted " + std::string(code))};
    }
    if (model_id.starts_with(delay_prefix)) {
        auto rest = model_id.substr(delay_prefix.size());
        unsigned ms = 0;
        auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), ms);
        if (ec != std::errc{} || end != rest.data() + rest.size()) return bad_script("delay");
        return {std::nullopt, std::chrono::milliseconds(ms)};
    }
    return {};
}

fake_response model_route(const recorded_request& req,
                          std::string_view model_id,
                          std::string_view op) {
    auto s = parse_script(model_id);
    if (s.error) return std::move(*s.error);
    fake_response r;
    if (op == "invoke")
        r = invoke(req, model_id);
    else if (op == "converse")
        r = converse(req);
    else
        r = count_tokens(req);
    r.delay = s.delay;
    return r;
}

// --- streaming routes ----------------------------------------------------------------------------

std::string base64(std::string_view in) {
    namespace b64 = beast::detail::base64;
    std::string out(b64::encoded_size(in.size()), '\0');
    out.resize(b64::encode(out.data(), in.data(), in.size()));
    return out;
}

std::string json_string(std::string_view s) {
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    write_string(w, s);
    return sb.GetString();
}

/// The text the streams answer with: the last user text of a Converse body, else fixed words.
std::vector<std::string> answer_pieces(const recorded_request& req) {
    std::string text = "Hello from fake Bedrock";
    rapidjson::Document doc;
    doc.Parse(req.body.data(), req.body.size());
    if (!doc.HasParseError() && doc.IsObject() && doc.HasMember("messages") &&
        doc["messages"].IsArray()) {
        for (const auto& m : doc["messages"].GetArray()) {
            if (!m.IsObject() || !m.HasMember("content") || !m["content"].IsArray()) continue;
            for (const auto& block : m["content"].GetArray()) {
                if (block.IsObject() && block.HasMember("text") && block["text"].IsString())
                    text.assign(block["text"].GetString(), block["text"].GetStringLength());
            }
        }
    }
    // Split after each space so the pieces concatenate back to the text.
    std::vector<std::string> pieces;
    std::size_t start = 0;
    while (start < text.size()) {
        auto space = text.find(' ', start);
        auto end = space == std::string::npos ? text.size() : space + 1;
        pieces.push_back(text.substr(start, end - start));
        start = end;
    }
    if (pieces.empty()) pieces.push_back("");
    return pieces;
}

/// InvokeModelWithResponseStream for an Anthropic Messages body: `chunk` events whose payload
/// is {"bytes": base64(model JSON)}, the Messages API's stream (message_start with the whole
/// message head, content_block_start, a text_delta per piece, content_block_stop,
/// message_delta with the stop reason and usage, message_stop); the last one carries
/// amazon-bedrock-invocationMetrics.
std::vector<std::string> invoke_stream_events(const recorded_request& req,
                                              std::string_view model_id) {
    std::vector<std::string> events;
    auto chunk = [&](const std::string& model_json) {
        events.push_back(
            aws::eventstream::bedrock_event("chunk", R"({"bytes":")" + base64(model_json) + "\"}"));
    };
    const auto pieces = answer_pieces(req);
    const auto in = std::to_string(estimate_tokens(req.body.size()));
    const auto out = std::to_string(pieces.size());
    chunk(R"({"type":"message_start","message":{"id":"msg_bdrk_)" + random_hex(24) +
          R"(","type":"message","role":"assistant","model":)" + json_string(model_id) +
          R"(,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":)" + in +
          R"(,"output_tokens":1}}})");
    chunk(R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})");
    for (const auto& piece : pieces) {
        chunk(R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":)" +
              json_string(piece) + "}}");
    }
    chunk(R"({"type":"content_block_stop","index":0})");
    chunk(R"({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},)"
          R"("usage":{"output_tokens":)" +
          out + "}}");
    chunk(R"({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":)" + in +
          ",\"outputTokenCount\":" + out + ",\"invocationLatency\":12,\"firstByteLatency\":3}}");
    return events;
}

/// ConverseStream: messageStart, contentBlockDelta per piece, contentBlockStop, messageStop,
/// metadata with usage.
std::vector<std::string> converse_stream_events(const recorded_request& req) {
    using aws::eventstream::bedrock_event;
    std::vector<std::string> events;
    events.push_back(bedrock_event("messageStart", R"({"role":"assistant"})"));
    const auto pieces = answer_pieces(req);
    for (const auto& piece : pieces) {
        events.push_back(bedrock_event(
            "contentBlockDelta",
            R"({"contentBlockIndex":0,"delta":{"text":)" + json_string(piece) + "}}"));
    }
    events.push_back(bedrock_event("contentBlockStop", R"({"contentBlockIndex":0})"));
    events.push_back(bedrock_event("messageStop", R"({"stopReason":"end_turn"})"));
    const auto in = estimate_tokens(req.body.size());
    const auto out = pieces.size();
    events.push_back(bedrock_event("metadata", R"({"usage":{"inputTokens":)" + std::to_string(in) +
                                                   ",\"outputTokens\":" + std::to_string(out) +
                                                   ",\"totalTokens\":" + std::to_string(in + out) +
                                                   R"(},"metrics":{"latencyMs":12}})"));
    return events;
}

std::optional<unsigned> scripted_number(std::string_view model_id, std::string_view prefix) {
    if (!model_id.starts_with(prefix)) return std::nullopt;
    auto rest = model_id.substr(prefix.size());
    unsigned n = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), n);
    if (ec != std::errc{} || end != rest.data() + rest.size()) return std::nullopt;
    return n;
}

fake_response stream_route(const recorded_request& req,
                           std::string_view model_id,
                           std::string_view op) {
    auto s = parse_script(model_id);
    if (s.error) return std::move(*s.error);
    const auto pause = s.delay;
    std::vector<std::string> events;
    if (op == "converse-stream") {
        rapidjson::Document doc;
        doc.Parse(req.body.data(), req.body.size());
        if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("messages"))
            return make_error(400, "ValidationException",
                              "The model returned the following errors: messages is required.");
        events = converse_stream_events(req);
    } else {
        events = invoke_stream_events(req, model_id);
    }

    fake_response r;
    r.headers.push_back({"Content-Type", "application/vnd.amazon.eventstream"});
    if (op == "invoke-with-response-stream")
        r.headers.push_back({"X-Amzn-Bedrock-Content-Type", "application/json"});
    constexpr std::string_view exception_prefix = "fake-stream-exception-";
    if (model_id.starts_with(exception_prefix)) {
        events.resize(2);
        auto member = std::string(model_id.substr(exception_prefix.size()));
        events.push_back(aws::eventstream::bedrock_exception(
            member, R"({"message":"fake-bedrock scripted mid-stream )" + member + "\"}"));
    } else if (model_id == "fake-stream-error") {
        events.resize(2);
        events.push_back(aws::eventstream::bedrock_error("InternalFailure",
                                                         "fake-bedrock scripted error frame"));
    } else if (model_id == "fake-stream-corrupt") {
        events.resize(2);
        events.back().back() = static_cast<char>(events.back().back() ^ 0x5a);  // message CRC
        r.stall = std::chrono::seconds(30);
    } else if (model_id == "fake-stream-cut") {
        events.resize(2);
        r.stream_complete = false;
    } else if (auto stall = scripted_number(model_id, "fake-stream-stall-")) {
        for (std::size_t i = 0; i < events.size(); ++i)
            r.stream.push_back({i == 1 ? std::chrono::milliseconds(*stall) : pause, events[i]});
        return r;
    }
    for (auto& e : events) r.stream.push_back({pause, std::move(e)});
    return r;
}

fake_response unknown_operation() {
    return make_error(404, "UnknownOperationException", "Unknown operation");
}

// --- S3 and the control plane's batch jobs (fake_batch.cpp keeps the state) ------------------

detail::fake_store* current_store() { return current_context ? current_context->store : nullptr; }

fake_response no_store() {
    return make_error(500, "InternalServerException",
                      "fake-bedrock: S3 and batch jobs need a running fake");
}

fake_response s3_route(const recorded_request& req) {
    auto* store = current_store();
    return store ? store->s3_route(req) : no_store();
}

fake_response create_job_route(const recorded_request& req) {
    auto* store = current_store();
    if (!store) return no_store();
    bool created = false;
    auto r = store->create_job(req, created);
    current_context->created_job = created;
    return r;
}

fake_response get_job_route(std::string_view identifier) {
    auto* store = current_store();
    if (!store) return no_store();
    return store->get_job(percent_decode(identifier),
                          current_context->options->batch_in_progress_polls);
}

// --- the control plane's reads: inference profiles and foundation models ------------------------

// One system-defined inference profile and one foundation model, in the shapes of the bedrock
// service model (ListInferenceProfiles / GetInferenceProfile / ListFoundationModels /
// GetFoundationModel), with ARNs in the request's scope region.
constexpr std::string_view fake_profile_id = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";
constexpr std::string_view fake_model_id = "anthropic.claude-3-5-sonnet-20240620-v1:0";

std::string profile_json(std::string_view region) {
    const std::string r(region);
    return R"({"inferenceProfileName":"US Anthropic Claude 3.5 Sonnet",)"
           R"("description":"Routes requests to Claude 3.5 Sonnet in US regions.",)"
           R"("createdAt":1718841600,"updatedAt":1718841600,)"
           R"("inferenceProfileArn":"arn:aws:bedrock:)" +
           r + ":" + std::string(fake_account) + ":inference-profile/" +
           std::string(fake_profile_id) + R"(","models":[{"modelArn":"arn:aws:bedrock:)" + r +
           "::foundation-model/" + std::string(fake_model_id) + R"("}],"inferenceProfileId":")" +
           std::string(fake_profile_id) + R"(","status":"ACTIVE","type":"SYSTEM_DEFINED"})";
}

std::string model_json(std::string_view region) {
    return R"({"modelArn":"arn:aws:bedrock:)" + std::string(region) + "::foundation-model/" +
           std::string(fake_model_id) + R"(","modelId":")" + std::string(fake_model_id) +
           R"(","modelName":"Claude 3.5 Sonnet","providerName":"Anthropic",)"
           R"("inputModalities":["TEXT","IMAGE"],"outputModalities":["TEXT"],)"
           R"("responseStreamingSupported":true,"customizationsSupported":[],)"
           R"("inferenceTypesSupported":["ON_DEMAND","INFERENCE_PROFILE"],)"
           R"("modelLifecycle":{"status":"ACTIVE"}})";
}

fake_response control_read(const recorded_request& req, const std::vector<std::string_view>& seg) {
    const std::string region = req.region.empty() ? "us-east-1" : req.region;
    if (seg[0] == "inference-profiles") {
        if (seg.size() == 1) {
            // `type=APPLICATION` (typeEquals) lists none: the fake account has made no profiles.
            const bool system = req.query.find("type=APPLICATION") == std::string::npos;
            return json_response(std::string(R"({"inferenceProfileSummaries":[)") +
                                 (system ? profile_json(region) : "") + "]}");
        }
        if (percent_decode(seg[1]) != fake_profile_id)
            return make_error(404, "ResourceNotFoundException", "Inference profile not found");
        return json_response(profile_json(region));
    }
    if (seg.size() == 1) return json_response(R"({"modelSummaries":[)" + model_json(region) + "]}");
    if (percent_decode(seg[1]) != fake_model_id)
        return make_error(404, "ResourceNotFoundException", "Foundation model not found");
    return json_response(R"({"modelDetails":)" + model_json(region) + "}");
}

// --- which API a request is for ------------------------------------------------------------------

// The first path segments of every operation in the bedrock and bedrock-runtime service models.
constexpr std::string_view bedrock_roots[] = {
    // bedrock-runtime
    "async-invoke", "guardrail", "guardrail-checks", "model",
    // bedrock (control plane)
    "advanced-prompt-optimization-job", "advanced-prompt-optimization-jobs",
    "automated-reasoning-policies", "create-foundation-model-agreement", "custom-models",
    "data-retention", "delete-foundation-model-agreement", "enforcedGuardrailsConfiguration",
    "evaluation-job", "evaluation-jobs", "foundation-model-availability", "foundation-models",
    "guardrails", "imported-models", "inference-profiles", "list-foundation-model-agreement-offers",
    "listTagsForResource", "logging", "marketplace-model", "model-copy-jobs", "model-customization",
    "model-customization-jobs", "model-import-jobs", "model-invocation-job",
    "model-invocation-jobs", "prompt-routers", "provisioned-model-throughput",
    "provisioned-model-throughputs", "resource-policy", "tagResource", "untagResource",
    "use-case-for-model-access"};

// S3 when the path is no Bedrock resource and the scope says s3, or when it looks like an object
// or bucket request (so an S3 request signed as `bedrock` is judged by S3's rules); else Bedrock.
bool for_s3(std::string_view method, std::string_view wire_path, std::string_view scope_service) {
    if (!wire_path.starts_with('/')) return false;
    auto first = wire_path.substr(1, wire_path.find('/', 1) - 1);
    if (std::find(std::begin(bedrock_roots), std::end(bedrock_roots), first) !=
        std::end(bedrock_roots))
        return false;
    if (scope_service == "s3") return true;
    return !first.empty() &&
           (method == "GET" || method == "PUT" || method == "HEAD" || method == "DELETE");
}

// --- the server ------------------------------------------------------------------------------

recorded_request record(http::request<http::string_body>& msg) {
    recorded_request rec;
    rec.method = std::string(msg.method_string());
    rec.target = std::string(msg.target());
    auto q = rec.target.find('?');
    rec.wire_path = rec.target.substr(0, q);
    if (q != std::string::npos) rec.query = rec.target.substr(q + 1);
    for (const auto& f : msg)
        rec.headers.push_back({std::string(f.name_string()), std::string(f.value())});
    rec.body = std::move(msg.body());
    rec.body_sha256 = independent_sigv4::sha256_hex(rec.body);
    return rec;
}

bool has_header(const std::vector<aws::header>& headers, std::string_view name) {
    return std::any_of(headers.begin(), headers.end(),
                       [name](const aws::header& h) { return iequals(h.name, name); });
}

http::response<http::string_body> to_http(fake_response r, unsigned version, bool keep_alive) {
    http::response<http::string_body> res;
    res.version(version);
    res.result(r.status);
    for (auto& h : r.headers) res.insert(h.name, h.value);
    res.body() = std::move(r.body);
    res.keep_alive(keep_alive);
    res.prepare_payload();
    return res;
}

void report_exception(std::exception_ptr e) {
    // Nothing may escape run(): a stray exception is a bug in the fake, so make it loud.
    if (!e) return;
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        std::fprintf(stderr, "fake_bedrock: coroutine threw: %s\n", ex.what());
    }
}

}  // namespace

struct fake_bedrock::state {
    fake_options options;
    std::function<void(const recorded_request&)> observer;  // written before start() only
    mutable std::mutex mutex;
    mutable std::condition_variable recorded;
    std::vector<recorded_request> requests;
    fake_behaviour behaviour = default_behaviour;
    std::function<void(const stream_outcome&)> stream_observer;  // written before start() only
    std::vector<stream_outcome> stream_outcomes;
    request_counter flaky_counts;
    detail::fake_store store;
    std::optional<net::ssl::context> tls;  ///< set when options.tls_cert_pem is
};

namespace {

using state_ptr = std::shared_ptr<fake_bedrock::state>;

// Verify, then run the behaviour, then publish the record (before the response is written, so a
// client holding the response can always see the record).
fake_response handle(recorded_request& rec, fake_bedrock::state& st) {
    auto now = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    fake_response resp;
    if (auto rejected = verify_signature(rec, st.options, now)) {
        resp = std::move(*rejected);
    } else {
        fake_behaviour behaviour;
        {
            std::lock_guard lock(st.mutex);
            behaviour = st.behaviour;
        }
        request_context ctx{&st.flaky_counts, &st.store, &st.options};
        struct context_scope {
            explicit context_scope(request_context& c) { current_context = &c; }
            ~context_scope() { current_context = nullptr; }
            context_scope(const context_scope&) = delete;
            context_scope& operator=(const context_scope&) = delete;
        } scope(ctx);
        try {
            resp = behaviour(rec);
        } catch (const std::exception& e) {
            resp = make_error(500, "InternalServerException",
                              std::string("fake behaviour threw: ") + e.what());
        }
        rec.created_job = ctx.created_job;
    }
    // S3's answers carry S3's own x-amz-request-id; the record (and x-amzn-RequestId) reuse it.
    if (!has_header(resp.headers, "x-amzn-RequestId")) {
        auto s3_id =
            std::find_if(resp.headers.begin(), resp.headers.end(),
                         [](const aws::header& h) { return iequals(h.name, "x-amz-request-id"); });
        resp.headers.push_back(
            {"x-amzn-RequestId", s3_id != resp.headers.end() ? s3_id->value : make_uuid()});
    }
    // What was answered goes into the record too, so end-to-end tests can prove the gateway
    // relayed this very response.
    rec.response_status = resp.status;
    for (const auto& h : resp.headers)
        if (iequals(h.name, "x-amzn-RequestId")) rec.request_id = h.value;
    if (st.observer) st.observer(rec);
    {
        std::lock_guard lock(st.mutex);
        st.requests.push_back(std::move(rec));
    }
    st.recorded.notify_all();
    return resp;
}

std::string rec_id(const fake_response& r) {
    for (const auto& h : r.headers)
        if (iequals(h.name, "x-amzn-RequestId")) return h.value;
    return {};
}

/// The TCP socket under a plain or TLS connection.
tcp::socket& socket_of(beast::tcp_stream& s) { return s.socket(); }
tcp::socket& socket_of(beast::ssl_stream<beast::tcp_stream>& s) {
    return beast::get_lowest_layer(s).socket();
}

/// Waits `pause` unless the peer closes first; true when the peer has gone. Data from the peer
/// (a pipelined request) does not count as going away.
net::awaitable<bool> pause_watching_peer(tcp::socket& socket, std::chrono::milliseconds pause) {
    using namespace net::experimental::awaitable_operators;
    net::steady_timer timer(socket.get_executor());
    timer.expires_after(pause);
    auto which = co_await (timer.async_wait(use_nothrow) ||
                           socket.async_wait(tcp::socket::wait_read, use_nothrow));
    if (which.index() == 0) co_return false;
    char probe;
    beast::error_code ec;
    auto n = socket.receive(net::buffer(&probe, 1), tcp::socket::message_peek, ec);
    if (ec || n == 0) co_return true;
    // Readable with data: wait out the pause without watching.
    timer.expires_after(pause);
    co_await timer.async_wait(use_nothrow);
    co_return false;
}

/// Writes a streamed response: header, one chunk per part after its pause, then the last chunk
/// (or a dropped connection). Returns whether the connection can serve another request.
template <class Stream>
net::awaitable<bool> write_stream(Stream& stream,
                                  fake_response resp,
                                  std::string request_id,
                                  fake_bedrock::state& st) {
    const auto started = std::chrono::steady_clock::now();
    stream_outcome outcome;
    outcome.request_id = std::move(request_id);
    outcome.parts_total = resp.stream.size();

    http::response<http::empty_body> head{static_cast<http::status>(resp.status), 11};
    for (auto& h : resp.headers) head.insert(h.name, h.value);
    head.chunked(true);
    http::response_serializer<http::empty_body> sr{head};
    auto [hec, hn] = co_await http::async_write_header(stream, sr, use_nothrow);
    bool ok = !hec;
    for (auto& part : resp.stream) {
        if (!ok) break;
        if (part.pause.count() > 0 && co_await pause_watching_peer(socket_of(stream), part.pause)) {
            outcome.peer_closed = true;
            ok = false;
            break;
        }
        auto [ec, n] = co_await net::async_write(stream, http::make_chunk(net::buffer(part.bytes)),
                                                 use_nothrow);
        if (ec) {
            outcome.peer_closed = true;
            ok = false;
            break;
        }
        ++outcome.parts_sent;
    }
    if (ok && resp.stall.count() > 0 &&
        co_await pause_watching_peer(socket_of(stream), resp.stall)) {
        outcome.peer_closed = true;
        ok = false;
    }
    if (ok && resp.stream_complete) {
        auto [ec, n] = co_await net::async_write(stream, http::make_chunk_last(), use_nothrow);
        outcome.completed = !ec;
        outcome.peer_closed = static_cast<bool>(ec);
    }
    outcome.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    if (st.stream_observer) st.stream_observer(outcome);
    {
        std::lock_guard lock(st.mutex);
        st.stream_outcomes.push_back(outcome);
    }
    st.recorded.notify_all();
    if (!outcome.completed) {
        // A dropped upstream: close without the last chunk, so the peer sees a cut body.
        beast::error_code ignored;
        socket_of(stream).close(ignored);
    }
    co_return outcome.completed;
}

template <class Stream>
net::awaitable<void> serve_requests(Stream& stream, state_ptr st) {
    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(64 * 1024);
        parser.body_limit(st->options.max_body_bytes);
        auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_nothrow);
        if (ec == http::error::body_limit) {
            auto res = to_http(make_error(413, "ValidationException", "Request body too large"), 11,
                               false);
            co_await http::async_write(stream, res, use_nothrow);
            break;
        }
        if (ec) break;  // peer closed (end_of_stream), reset, or garbage: just drop the connection
        auto msg = parser.release();
        auto rec = record(msg);
        auto resp = handle(rec, *st);
        if (resp.delay.count() > 0) {
            net::steady_timer timer(stream.get_executor());
            timer.expires_after(resp.delay);
            co_await timer.async_wait(use_nothrow);
        }
        if (!resp.stream.empty()) {
            auto id = rec_id(resp);
            if (!co_await write_stream(stream, std::move(resp), std::move(id), *st)) break;
            continue;
        }
        auto res = to_http(std::move(resp), msg.version(), msg.keep_alive());
        auto [wec, wn] = co_await http::async_write(stream, res, use_nothrow);
        if (wec || !res.keep_alive()) break;
    }
}

net::awaitable<void> serve_connection(tcp::socket socket, state_ptr st) {
    beast::error_code ignored;
    if (!st->tls) {
        beast::tcp_stream stream(std::move(socket));
        co_await serve_requests(stream, st);
        stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *st->tls);
    // A handshake that never completes must not hold the connection forever.
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
    auto [hec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_nothrow);
    if (hec) co_return;
    beast::get_lowest_layer(stream).expires_never();
    co_await serve_requests(stream, st);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(use_nothrow);
}

net::awaitable<void> accept_loop(tcp::acceptor acceptor, state_ptr st) {
    for (;;) {
        auto [ec, socket] =
            co_await acceptor.async_accept(net::make_strand(acceptor.get_executor()), use_nothrow);
        if (ec == net::error::operation_aborted) co_return;
        if (ec) continue;
        // Like Bedrock's own front end: small event frames go out at once, not after the
        // peer's delayed ACK (Nagle).
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        // One strand per connection (style.md section 3), even though the fake has one thread.
        auto ex = socket.get_executor();
        net::co_spawn(ex, serve_connection(std::move(socket), st), report_exception);
    }
}

}  // namespace

// --- public helpers ------------------------------------------------------------------------------

std::optional<std::string> recorded_request::header(std::string_view name) const {
    for (const auto& h : headers)
        if (iequals(h.name, name)) return h.value;
    return std::nullopt;
}

fake_response make_error(unsigned status, std::string_view code, std::string_view message) {
    rapidjson::StringBuffer sb;
    json_writer w(sb);
    w.StartObject();
    w.Key("message");
    write_string(w, message);
    w.EndObject();
    auto r = json_response(sb.GetString());
    r.status = status;
    r.headers.push_back({"x-amzn-ErrorType", std::string(code) + std::string(error_type_suffix)});
    return r;
}

std::string percent_decode(std::string_view s) {
    auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

fake_response default_behaviour(const recorded_request& req) {
    if (req.service == "s3") return s3_route(req);
    if (req.wire_path.empty() || req.wire_path.front() != '/') return unknown_operation();
    auto seg = split(std::string_view(req.wire_path).substr(1), '/');
    const bool post = req.method == "POST";
    const bool get = req.method == "GET";

    if (get && (seg.size() == 1 || (seg.size() == 2 && !seg[1].empty())) &&
        (seg[0] == "inference-profiles" || seg[0] == "foundation-models"))
        return control_read(req, seg);
    if (post && seg.size() == 1 && seg[0] == "model-invocation-job") return create_job_route(req);
    if (get && seg.size() == 2 && seg[0] == "model-invocation-job" && !seg[1].empty())
        return get_job_route(seg[1]);

    if (post && seg.size() == 3 && seg[0] == "model" && !seg[1].empty() &&
        (seg[2] == "invoke" || seg[2] == "converse" || seg[2] == "count-tokens"))
        return model_route(req, percent_decode(seg[1]), seg[2]);
    if (post && seg.size() == 3 && seg[0] == "model" && !seg[1].empty() &&
        (seg[2] == "invoke-with-response-stream" || seg[2] == "converse-stream"))
        return stream_route(req, percent_decode(seg[1]), seg[2]);
    if (post && seg.size() == 5 && seg[0] == "guardrail" && !seg[1].empty() &&
        seg[2] == "version" && !seg[3].empty() && seg[4] == "apply")
        return apply_guardrail();
    if (seg.size() == 1 && seg[0] == "async-invoke") {
        if (post) return start_async_invoke(req);
        if (get) return json_response(R"({"asyncInvokeSummaries":[]})");
    }
    if (get && seg.size() == 2 && seg[0] == "async-invoke" && !seg[1].empty())
        return get_async_invoke(req, percent_decode(seg[1]));
    return unknown_operation();
}

std::optional<fake_response> verify_signature(recorded_request& req,
                                              const fake_options& opts,
                                              std::chrono::sys_seconds now) {
    auto authorization = req.header("authorization");
    auto parsed = authorization ? aws::parse_authorization(*authorization) : std::nullopt;
    if (parsed) {
        req.auth = "sigv4";
        req.access_key_id = parsed->access_key_id;
        req.region = parsed->region;
        req.service = parsed->service;
    }
    constexpr std::string_view bearer_scheme = "Bearer ";
    const bool bearer =
        authorization && authorization->size() >= bearer_scheme.size() &&
        iequals(std::string_view(*authorization).substr(0, bearer_scheme.size()), bearer_scheme);
    if (bearer) req.auth = "bearer";
    // Whom the request is for decides the rules and the shape of a rejection.
    const bool s3 = for_s3(req.method, req.wire_path, parsed ? parsed->service : "");
    if (s3) {
        if (auto loc = detail::parse_s3_path(req.wire_path)) {
            req.s3_bucket = std::move(loc->bucket);
            req.s3_key = std::move(loc->key);
        }
    }
    // Bedrock's code and message, then S3's (always 403 here, see the header).
    auto reject = [&req, s3](std::string_view code, std::string_view message,
                             std::string_view s3_code, std::string_view s3_message) {
        req.error_type = std::string(s3 ? s3_code : code);
        return std::optional<fake_response>(s3 ? make_s3_error(403, s3_code, s3_message)
                                               : make_error(403, code, message));
    };
    constexpr std::string_view mismatch =
        "The request signature we calculated does not match the signature you provided. Check "
        "your AWS Secret Access Key and signing method. Consult the service documentation for "
        "details.";
    constexpr std::string_view s3_mismatch =
        "The request signature we calculated does not match the signature you provided. Check "
        "your key and signing method.";
    constexpr std::string_view s3_malformed = "The authorization header is malformed; ";

    if (!authorization)
        return reject("MissingAuthenticationTokenException", "Missing Authentication Token",
                      "AccessDenied", "Access Denied");
    if (bearer && !s3 && !opts.bearer_token.empty()) {
        // A Bedrock API key: the exact header, and nothing of SigV4's riding along with it.
        if (*authorization != std::string(bearer_scheme) + opts.bearer_token)
            return reject("AccessDeniedException",
                          "Authentication failed: Please make sure your API Key is valid.", {}, {});
        if (req.header("x-amz-security-token"))
            return reject("UnrecognizedClientException",
                          "The security token included in the request is invalid.", {}, {});
        req.signature_ok = true;
        return std::nullopt;
    }
    if (!parsed)
        return reject("IncompleteSignatureException",
                      "Authorization header requires 'Credential', 'Signature' and "
                      "'SignedHeaders' parameters.",
                      "AuthorizationHeaderMalformed",
                      std::string(s3_malformed) + "it is not an AWS4-HMAC-SHA256 signature.");

    // A bearer-only fake (no keys) knows no access key at all.
    if (opts.credentials.access_key_id.empty() ||
        parsed->access_key_id != opts.credentials.access_key_id)
        return reject("UnrecognizedClientException",
                      "The security token included in the request is invalid.",
                      "InvalidAccessKeyId",
                      "The AWS Access Key Id you provided does not exist in our records.");
    // A token where none is expected is as wrong as a missing or different one: it means a
    // client's credentials leaked through.
    if (req.header("x-amz-security-token").value_or("") != opts.credentials.session_token)
        return reject("UnrecognizedClientException",
                      "The security token included in the request is invalid.", "InvalidToken",
                      "The provided token is malformed or otherwise invalid.");

    auto amz_date = req.header("x-amz-date");
    if (!amz_date)
        return reject("IncompleteSignatureException",
                      "Authorization header requires existence of either a 'X-Amz-Date' or a "
                      "'Date' header.",
                      "AccessDenied",
                      "AWS authentication requires a valid Date or x-amz-date header");
    auto when = aws::parse_amz_date(*amz_date);
    if (!when)
        return reject("IncompleteSignatureException", "Date must be in ISO-8601 'basic format'.",
                      "AccessDenied",
                      "AWS authentication requires a valid Date or x-amz-date header");
    constexpr std::string_view skewed =
        "The difference between the request time and the current time is too large.";
    if (*when < now - opts.max_clock_skew)
        return reject("InvalidSignatureException",
                      "Signature expired: " + *amz_date + " is now earlier than " +
                          aws::format_amz_date(now - opts.max_clock_skew) + " (" +
                          aws::format_amz_date(now) + " - 5 min.)",
                      "RequestTimeTooSkewed", skewed);
    if (*when > now + opts.max_clock_skew)
        return reject("InvalidSignatureException",
                      "Signature not yet current: " + *amz_date + " is still later than " +
                          aws::format_amz_date(now + opts.max_clock_skew) + " (" +
                          aws::format_amz_date(now) + " + 5 min.)",
                      "RequestTimeTooSkewed", skewed);
    if (parsed->date != amz_date->substr(0, 8))
        return reject("InvalidSignatureException",
                      "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                      "date from HTTP: '" +
                          parsed->date + "' != '" + amz_date->substr(0, 8) + "'",
                      "AuthorizationHeaderMalformed",
                      std::string(s3_malformed) +
                          "Invalid credential date. Date is not the same as X-Amz-Date.");
    const std::string_view service = s3 ? "s3" : "bedrock";
    if (parsed->service != service)
        return reject("InvalidSignatureException",
                      "Credential should be scoped to correct service: 'bedrock'.",
                      "SignatureDoesNotMatch",
                      "Credential should be scoped to correct service: 's3'.");
    if (std::find(opts.regions.begin(), opts.regions.end(), parsed->region) == opts.regions.end())
        return reject("InvalidSignatureException", "Credential should be scoped to a valid region.",
                      "AuthorizationHeaderMalformed",
                      std::string(s3_malformed) + "the region '" + parsed->region + "' is wrong.");

    std::set<std::string> signed_names;
    for (const auto& n : parsed->signed_headers) signed_names.insert(to_lower(n));
    if (!signed_names.contains("host"))
        return reject("InvalidSignatureException",
                      "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
                      "SignatureDoesNotMatch", s3_mismatch);
    // Every header the client said it signed must have arrived.
    std::set<std::string> seen;
    for (const auto& h : req.headers) {
        auto lower = to_lower(h.name);
        if (signed_names.contains(lower)) seen.insert(lower);
    }
    if (seen != signed_names)
        return reject("InvalidSignatureException", mismatch, "SignatureDoesNotMatch", s3_mismatch);

    if (s3) {
        // S3 signs the payload hash it is told about, so it must be told, and told the truth.
        auto content_sha = req.header("x-amz-content-sha256");
        if (!content_sha)
            return reject({}, {}, "SignatureDoesNotMatch",
                          "Missing required header for this request: x-amz-content-sha256");
        if (!signed_names.contains("x-amz-content-sha256"))
            return reject({}, {}, "SignatureDoesNotMatch",
                          "The x-amz-content-sha256 header must be a signed header.");
        if (*content_sha != req.body_sha256)
            return reject({}, {}, "SignatureDoesNotMatch",
                          "The provided 'x-amz-content-sha256' header does not match what was "
                          "computed.");
    }

    // The signature itself is recomputed by a second implementation that shares no code with
    // the gateway's signer, so a canonicalisation mistake there cannot agree with itself here.
    independent_sigv4::received in;
    in.method = req.method;
    in.wire_path = req.wire_path;
    in.query = req.query;
    for (const auto& h : req.headers) in.headers.emplace_back(h.name, h.value);
    in.payload_sha256 = req.body_sha256;
    in.authorization = *authorization;
    in.s3 = s3;
    auto sig = independent_sigv4::recompute(in, opts.credentials.secret_access_key);
    if (!sig || sig->signature != sig->claimed)
        return reject("InvalidSignatureException", mismatch, "SignatureDoesNotMatch", s3_mismatch);
    req.signature_ok = true;
    return std::nullopt;
}

void sign_request(http::request<http::string_body>& req,
                  const aws::credentials& creds,
                  std::string_view region,
                  std::chrono::sys_seconds time,
                  std::string_view service) {
    const bool s3 = service == "s3";
    if (req.find(http::field::host) == req.end())
        req.set(http::field::host,
                (s3 ? "s3." : "bedrock-runtime.") + std::string(region) + ".amazonaws.com");
    req.erase(http::field::authorization);
    req.erase("X-Amz-Date");
    if (!creds.session_token.empty()) req.erase("X-Amz-Security-Token");
    req.prepare_payload();  // Content-Length is sent, so botocore signs it; so do we

    std::vector<aws::header> headers;
    for (const auto& f : req)
        headers.push_back({std::string(f.name_string()), std::string(f.value())});
    std::string_view target = req.target();
    auto q = target.find('?');
    auto added = aws::sign_request(
        headers,
        {.method = req.method_string(),
         .wire_path = target.substr(0, q),
         .query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1),
         .body = req.body(),
         .region = region,
         .service = service,
         .time = time},
        creds);
    for (auto& h : added) req.set(h.name, h.value);
}

// --- fake_bedrock --------------------------------------------------------------------------------

fake_bedrock::fake_bedrock(fake_options opts) : state_(std::make_shared<state>()) {
    state_->options = std::move(opts);
}

fake_bedrock::~fake_bedrock() { stop(); }

void fake_bedrock::start() {
    if (thread_.joinable()) return;
    if (!state_->options.tls_cert_pem.empty() && !state_->tls) {
        auto& ctx = state_->tls.emplace(net::ssl::context::tls_server);
        ctx.use_certificate_chain(net::buffer(state_->options.tls_cert_pem));
        ctx.use_private_key(net::buffer(state_->options.tls_key_pem), net::ssl::context::pem);
    }
    ioc_ = std::make_unique<net::io_context>(1);
    tcp::acceptor acceptor(*ioc_);
    tcp::endpoint ep(net::ip::make_address("127.0.0.1"), 0);
    acceptor.open(ep.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    if (state_->options.receive_buffer_bytes > 0) {
        // Accepted sockets inherit it: a small window makes the gateway's writes partial.
        acceptor.set_option(net::socket_base::receive_buffer_size(
            static_cast<int>(state_->options.receive_buffer_bytes)));
    }
    acceptor.bind(ep);
    acceptor.listen();
    port_ = acceptor.local_endpoint().port();
    net::co_spawn(*ioc_, accept_loop(std::move(acceptor), state_), report_exception);
    thread_ = std::thread([io = ioc_.get()] { io->run(); });
}

void fake_bedrock::stop() {
    if (!thread_.joinable()) return;
    // Stopping the loop (rather than cancelling each socket) cannot hang on a peer that never
    // closes; destroying the io_context then destroys the suspended coroutine frames, which
    // closes their sockets and timers.
    ioc_->stop();
    thread_.join();
    ioc_.reset();
}

std::string fake_bedrock::endpoint() const {
    // A TLS fake's certificate names localhost (make_test_pki), so that is the host to dial.
    return state_->tls ? "https://localhost:" + std::to_string(port_)
                       : "http://127.0.0.1:" + std::to_string(port_);
}

void fake_bedrock::set_behaviour(fake_behaviour behaviour) {
    std::lock_guard lock(state_->mutex);
    state_->behaviour = behaviour ? std::move(behaviour) : fake_behaviour(default_behaviour);
}

void fake_bedrock::set_observer(std::function<void(const recorded_request&)> observer) {
    state_->observer = std::move(observer);
}

void fake_bedrock::set_stream_observer(std::function<void(const stream_outcome&)> observer) {
    state_->stream_observer = std::move(observer);
}

std::vector<stream_outcome> fake_bedrock::stream_outcomes() const {
    std::lock_guard lock(state_->mutex);
    return state_->stream_outcomes;
}

bool fake_bedrock::wait_for_stream_outcomes(std::size_t n,
                                            std::chrono::milliseconds timeout) const {
    std::unique_lock lock(state_->mutex);
    return state_->recorded.wait_for(lock, timeout,
                                     [&] { return state_->stream_outcomes.size() >= n; });
}

std::vector<recorded_request> fake_bedrock::requests() const {
    std::lock_guard lock(state_->mutex);
    return state_->requests;
}

std::size_t fake_bedrock::request_count() const {
    std::lock_guard lock(state_->mutex);
    return state_->requests.size();
}

void fake_bedrock::clear_requests() {
    std::lock_guard lock(state_->mutex);
    state_->requests.clear();
}

bool fake_bedrock::wait_for_requests(std::size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(state_->mutex);
    return state_->recorded.wait_for(lock, timeout, [&] { return state_->requests.size() >= n; });
}

void fake_bedrock::put_s3_object(std::string_view bucket,
                                 std::string_view key,
                                 std::string body,
                                 std::string content_type) {
    state_->store.put(bucket, key, std::move(body), std::move(content_type));
}

std::optional<stored_s3_object> fake_bedrock::s3_object(std::string_view bucket,
                                                        std::string_view key) const {
    return state_->store.get(bucket, key);
}

std::vector<stored_s3_object> fake_bedrock::s3_objects(std::string_view bucket,
                                                       std::string_view prefix) const {
    return state_->store.list(bucket, prefix);
}

std::size_t fake_bedrock::batch_jobs_created() const { return state_->store.jobs_created(); }

std::vector<fake_batch_job> fake_bedrock::batch_jobs() const { return state_->store.jobs(); }

}  // namespace bgw::test
