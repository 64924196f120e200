#include "bgw/routing/runtime_path.hpp"

#include <algorithm>
#include <array>
#include <vector>

#include <boost/url/parse.hpp>
#include <boost/url/pct_string_view.hpp>
#include <boost/url/url_view.hpp>

namespace bgw::routing {
namespace {

namespace http = boost::beast::http;

error unknown_operation(http::verb method, std::string_view path) {
    std::string shown(path.substr(0, 200));
    return {http::status::not_found, "UnknownOperationException",
            "no Bedrock runtime operation matches " + std::string(http::to_string(method)) + " " +
                shown};
}

/// Decodes one percent-encoded label and checks it is something Bedrock could mean.
result<std::string> decode_label(boost::urls::pct_string_view encoded, std::string_view what) {
    std::string decoded = encoded.decode();
    if (decoded.empty()) return validation_error(std::string(what) + " is empty");
    if (decoded.size() > max_label_bytes) {
        return validation_error(std::string(what) + " is longer than " +
                                std::to_string(max_label_bytes) + " bytes");
    }
    if (decoded == "." || decoded == "..") {
        return validation_error(std::string(what) + " may not be a dot segment");
    }
    // No model id, ARN, inference profile or guardrail Bedrock knows is anything but visible
    // ASCII (the service model's patterns); anything else is refused here, before it can reach
    // a metrics label or a log line.
    for (unsigned char c : decoded) {
        if (c <= 0x20 || c >= 0x7f) {
            return validation_error(std::string(what) +
                                    " must be printable ASCII (no spaces, control characters or "
                                    "bytes above 0x7e)");
        }
    }
    return decoded;
}

/// A path's segments, still percent-encoded.
using segment_list = std::vector<boost::urls::pct_string_view>;

struct route_entry {
    http::verb method;
    std::array<std::string_view, 5> pattern;  ///< "{}" marks a label; "" ends the pattern
    operation op;
    bool takes_query;
};

// The runtime API surface, from the service model's `requestUri`s.
constexpr std::array<route_entry, 10> routes = {{
    {http::verb::post, {"model", "{}", "invoke"}, operation::invoke_model, false},
    {http::verb::post,
     {"model", "{}", "invoke-with-response-stream"},
     operation::invoke_model_with_response_stream,
     false},
    {http::verb::post, {"model", "{}", "converse"}, operation::converse, false},
    {http::verb::post, {"model", "{}", "converse-stream"}, operation::converse_stream, false},
    {http::verb::post, {"model", "{}", "count-tokens"}, operation::count_tokens, false},
    {http::verb::post,
     {"guardrail", "{}", "version", "{}", "apply"},
     operation::apply_guardrail,
     false},
    {http::verb::post, {"guardrail-checks", "invoke"}, operation::invoke_guardrail_checks, false},
    {http::verb::post, {"async-invoke"}, operation::start_async_invoke, false},
    {http::verb::get, {"async-invoke"}, operation::list_async_invokes, true},
    {http::verb::get, {"async-invoke", "{}"}, operation::get_async_invoke, false},
}};

std::size_t pattern_size(const route_entry& r) {
    std::size_t n = 0;
    while (n < r.pattern.size() && !r.pattern[n].empty()) ++n;
    return n;
}

/// Whether `segs` (the path's segments) and `method` are this route's: every literal segment
/// equal, one segment per label.
bool matches(const route_entry& r, http::verb method, const segment_list& segs) {
    const std::size_t n = pattern_size(r);
    if (segs.size() != n) return false;
    for (std::size_t i = 0; i < n; ++i) {
        if (r.pattern[i] != "{}" && segs[i] != r.pattern[i]) return false;
    }
    return r.method == method;
}

/// What the label at position `i` of route `r` holds, for error messages.
std::string_view label_kind(const route_entry& r, std::size_t i) {
    if (r.pattern[0] == "model") return "model id";
    if (r.pattern[0] == "guardrail") return i == 1 ? "guardrail id" : "guardrail version";
    return "invocation ARN";
}

/// The wire path of a matched route (each label decoded, then encoded once) and its model id.
result<void> fill_labels(const route_entry& r, const segment_list& segs, runtime_request& out) {
    for (std::size_t i = 0; i < pattern_size(r); ++i) {
        out.wire_path += '/';
        if (r.pattern[i] != "{}") {
            out.wire_path += r.pattern[i];
            continue;
        }
        auto label = decode_label(segs[i], label_kind(r, i));
        if (!label) return label.error();
        out.wire_path += encode_label(*label);
        if (r.pattern[0] == "model") out.model_id = std::move(*label);
    }
    return {};
}

/// Drops the empty segments at the front of `segs`; whether there were any.
bool drop_empty_front(segment_list& segs) {
    auto first = std::find_if(segs.begin(), segs.end(),
                              [](boost::urls::pct_string_view s) { return !s.empty(); });
    const bool any = first != segs.begin();
    segs.erase(segs.begin(), first);
    return any;
}

/// Splits off `/{region}/...` and the empty segments where an endpoint URL's path ends and the
/// API path begins. A client that joins its endpoint path to `/model/...` by concatenation sends
/// `//model/...` for `http://gw:8080/` (a URL whose path is `/`, as every parsed URL's is) and
/// `/eu-west-1//model/...` for `http://gw:8080/eu-west-1/`; both mean what they would without
/// the slash, and no runtime path starts with an empty segment, so neither reading is ambiguous.
/// Empty segments anywhere else stay (`/model//invoke` is an empty model id), and `%2F` never
/// separates (`encoded_segments`).
result<std::string> split_region_prefix(segment_list& segs) {
    // `//eu-west-1/model/...` is no endpoint anyone writes; after a leading run of empty
    // segments the API path must follow.
    if (drop_empty_front(segs)) return std::string();
    // `/{region}/model/...`: an SDK endpoint URL with a path (`http://gw:8080/eu-west-1`) pins
    // a region. Anything in that place that is not a first segment of the API is taken as one,
    // and the router decides whether it is a region the gateway may use.
    if (segs.size() < 2 || std::any_of(routes.begin(), routes.end(), [&](const route_entry& r) {
            return segs[0] == r.pattern[0];
        }))
        return std::string();
    auto prefix = decode_label(segs[0], "region prefix");
    if (!prefix) return prefix.error();
    segs.erase(segs.begin());
    drop_empty_front(segs);
    return prefix;
}

// The SigV4 query-signing parameters, spelled as AWS documents them.
constexpr std::array<std::string_view, 7> sigv4_query_names = {
    "X-Amz-Algorithm", "X-Amz-Credential",    "X-Amz-Date",           "X-Amz-Expires",
    "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Security-Token",
};

}  // namespace

std::string_view operation_name(operation op) {
    switch (op) {
        case operation::invoke_model:
            return "InvokeModel";
        case operation::invoke_model_with_response_stream:
            return "InvokeModelWithResponseStream";
        case operation::converse:
            return "Converse";
        case operation::converse_stream:
            return "ConverseStream";
        case operation::count_tokens:
            return "CountTokens";
        case operation::apply_guardrail:
            return "ApplyGuardrail";
        case operation::invoke_guardrail_checks:
            return "InvokeGuardrailChecks";
        case operation::start_async_invoke:
            return "StartAsyncInvoke";
        case operation::list_async_invokes:
            return "ListAsyncInvokes";
        case operation::get_async_invoke:
            return "GetAsyncInvoke";
    }
    return "Unknown";
}

bool is_streaming(operation op) {
    return op == operation::invoke_model_with_response_stream || op == operation::converse_stream;
}

std::string encode_label(std::string_view s) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(s.size() * 3);
    for (unsigned char c : s) {
        bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (unreserved) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 0xF]);
        }
    }
    return out;
}

result<runtime_request> parse_runtime_target(http::verb method, std::string_view target) {
    auto parsed = boost::urls::parse_origin_form(target);
    if (!parsed) {
        return validation_error("request target is not a valid origin-form path");
    }
    const boost::urls::url_view& url = *parsed;
    // encoded_segments keeps `%2F` inside a label (an ARN) as part of that label.
    segment_list segs;
    for (auto seg : url.encoded_segments()) segs.push_back(seg);
    auto region_prefix = split_region_prefix(segs);
    if (!region_prefix) return region_prefix.error();
    // A trailing slash yields an empty last segment; the runtime API has none.
    for (const route_entry& r : routes) {
        if (!matches(r, method, segs)) continue;
        runtime_request out{r.op, {}, {}, {}, std::move(*region_prefix)};
        if (auto built = fill_labels(r, segs, out); !built) return built.error();
        // The client's own signature goes before the operation's query rule: the gateway signs
        // again, in headers, and an operation without a query must not refuse a presigned URL.
        stripped_query query = strip_sigv4_query(url.encoded_query());
        if (!r.takes_query && !query.rest.empty()) {
            return validation_error(std::string(operation_name(r.op)) +
                                    " takes no query parameters");
        }
        out.query = std::move(query.rest);
        out.query_credential = std::move(query.credential);
        return out;
    }
    return unknown_operation(method, url.encoded_path());
}

stripped_query strip_sigv4_query(std::string_view encoded_query) {
    stripped_query out;
    if (encoded_query.empty()) return out;  // nearly every runtime request
    // Split by hand, not with boost::urls::parse_query: in Boost 1.81 the view it returns reads
    // its last value past the end of the string it was given, up to a NUL (here the rest of the
    // request line; tests/fuzz/seeds/runtime_path/target-3aec347e.req found it).
    bool dropped = false;
    std::string rest;
    std::string_view left = encoded_query;
    for (bool more = true; more;) {
        const auto amp = left.find('&');
        const std::string_view piece = left.substr(0, amp);
        more = amp != std::string_view::npos;
        if (more) left.remove_prefix(amp + 1);
        const auto eq = piece.find('=');
        // A name with a bad escape is no signing parameter; the operation's rule judges it.
        auto name = boost::urls::make_pct_string_view(piece.substr(0, eq));
        const std::string decoded = name ? name->decode() : std::string();
        if (std::find(sigv4_query_names.begin(), sigv4_query_names.end(), decoded) !=
            sigv4_query_names.end()) {
            dropped = true;
            if (decoded == "X-Amz-Credential" && out.credential.empty() &&
                eq != std::string_view::npos) {
                if (auto value = boost::urls::make_pct_string_view(piece.substr(eq + 1)))
                    out.credential = value->decode();
            }
            continue;
        }
        // An empty piece (`a=1&&b=2`) carries nothing; it is left out once the query is rebuilt.
        if (piece.empty()) continue;
        if (!rest.empty()) rest += '&';
        rest += piece;
    }
    out.rest = dropped ? std::move(rest) : std::string(encoded_query);
    return out;
}

std::string model_wire_path(operation op, std::string_view model_id) {
    for (const route_entry& r : routes) {
        if (r.op == op && r.pattern[0] == "model")
            return "/model/" + encode_label(model_id) + "/" + std::string(r.pattern[2]);
    }
    return {};
}

}  // namespace bgw::routing
