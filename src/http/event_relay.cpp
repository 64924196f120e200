#include "bgw/http/event_relay.hpp"

#include "bgw/util/json.hpp"

#include <openssl/evp.h>
#include <rapidjson/document.h>

namespace bgw::http {
namespace {

namespace es = aws::eventstream;

std::optional<std::uint64_t> uint_member(const rapidjson::Value& obj, const char* name) {
    if (!obj.IsObject()) return std::nullopt;
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || !it->value.IsUint64()) return std::nullopt;
    return it->value.GetUint64();
}

std::string string_member(const rapidjson::Value& obj, const char* name) {
    if (!obj.IsObject()) return {};
    auto it = obj.FindMember(name);
    if (it == obj.MemberEnd() || !it->value.IsString()) return {};
    return {it->value.GetString(), it->value.GetStringLength()};
}

bool parse(rapidjson::Document& doc, std::string_view json) {
    bgw::util::parse_json(doc, std::string_view(json.data(), json.size()));
    return !doc.HasParseError() && doc.IsObject();
}

/// An exception frame's `:exception-type` and payload message, or an error frame's
/// `:error-code` and `:error-message`.
void note_failure(stream_summary& summary, std::string_view type, const es::frame_view& frame) {
    if (type == "exception") {
        summary.exception = std::string(frame.string_header(":exception-type").value_or(""));
        rapidjson::Document doc;
        if (parse(doc, frame.payload())) summary.exception_message = string_member(doc, "message");
    } else {
        summary.exception = std::string(frame.string_header(":error-code").value_or(""));
        summary.exception_message = std::string(frame.string_header(":error-message").value_or(""));
    }
}

/// ConverseStream's metadata event: {"usage":{"inputTokens":N,"outputTokens":M,...},...}
void note_converse_usage(stream_summary& summary, const es::frame_view& frame) {
    rapidjson::Document doc;
    if (!parse(doc, frame.payload())) return;
    auto usage = doc.FindMember("usage");
    if (usage == doc.MemberEnd()) return;
    if (auto n = uint_member(usage->value, "inputTokens")) summary.input_tokens = n;
    if (auto n = uint_member(usage->value, "outputTokens")) summary.output_tokens = n;
}

/// InvokeModelWithResponseStream's chunk event: {"bytes":"<base64 of the model's JSON>"}; the
/// last chunk's model JSON carries amazon-bedrock-invocationMetrics.
void note_invoke_usage(stream_summary& summary, const es::frame_view& frame) {
    constexpr std::string_view metrics_key = "amazon-bedrock-invocationMetrics";
    rapidjson::Document doc;
    if (!parse(doc, frame.payload())) return;
    auto bytes = base64_decode(string_member(doc, "bytes"));
    if (!bytes || bytes->find(metrics_key) == std::string::npos) return;
    rapidjson::Document inner;
    if (!parse(inner, *bytes)) return;
    auto metrics = inner.FindMember(metrics_key.data());
    if (metrics == inner.MemberEnd()) return;
    if (auto n = uint_member(metrics->value, "inputTokenCount")) summary.input_tokens = n;
    if (auto n = uint_member(metrics->value, "outputTokenCount")) summary.output_tokens = n;
}

}  // namespace

std::optional<std::string> base64_decode(std::string_view in) {
    if (in.size() % 4 != 0) return std::nullopt;
    std::string out(in.size() / 4 * 3, '\0');
    if (in.empty()) return out;
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(in.data()),
                                  static_cast<int>(in.size()));
    if (n < 0) return std::nullopt;
    // EVP_DecodeBlock counts the padding as zero bytes; drop them.
    std::size_t padding = 0;
    if (in.ends_with("==")) {
        padding = 2;
    } else if (in.ends_with('=')) {
        padding = 1;
    }
    out.resize(static_cast<std::size_t>(n) - padding);
    return out;
}

bool event_relay::feed(std::string_view in, std::string& out) {
    if (!summary_.corrupt.empty()) return false;
    while (!in.empty()) {
        auto step = decoder_.feed(in);
        if (!step) {
            summary_.corrupt = std::string(es::to_string(step.error()));
            return false;
        }
        in.remove_prefix(step->consumed);
        if (step->frame) {
            auto wire = step->frame->wire();
            out.append(reinterpret_cast<const char*>(wire.data()), wire.size());
            observe(*step->frame);
        }
    }
    return true;
}

void event_relay::observe(const es::frame_view& frame) {
    ++summary_.frames;
    const auto type = frame.string_header(":message-type").value_or("");
    if (type == "exception" || type == "error") {
        // The first one is the one that matters.
        if (summary_.exception.empty()) note_failure(summary_, type, frame);
        return;
    }
    if (type != "event") return;
    ++summary_.events;
    const auto event = frame.string_header(":event-type").value_or("");
    if (event == "metadata") {
        note_converse_usage(summary_, frame);
    } else if (event == "chunk") {
        note_invoke_usage(summary_, frame);
    }
}

std::string stream_failure_frame(std::string_view why) {
    return es::bedrock_error("InternalServerException", why.substr(0, 1024));
}

}  // namespace bgw::http
