#include "bgw/routing/control_plane.hpp"

#include "bgw/routing/runtime_path.hpp"

#include <algorithm>
#include <array>
#include <vector>

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

namespace bgw::routing {
namespace {

namespace http = boost::beast::http;

// Every first segment of a `bedrock` (control plane) requestUri, from the service model;
// tests/unit/control_plane_test.cpp checks the list against the model itself.
constexpr std::array<std::string_view, 32> control_resources = {
    "advanced-prompt-optimization-job",
    "advanced-prompt-optimization-jobs",
    "automated-reasoning-policies",
    "create-foundation-model-agreement",
    "custom-models",
    "data-retention",
    "delete-foundation-model-agreement",
    "enforcedGuardrailsConfiguration",
    "evaluation-job",
    "evaluation-jobs",
    "foundation-model-availability",
    "foundation-models",
    "guardrails",
    "imported-models",
    "inference-profiles",
    "list-foundation-model-agreement-offers",
    "listTagsForResource",
    "logging",
    "marketplace-model",
    "model-copy-jobs",
    "model-customization",
    "model-customization-jobs",
    "model-import-jobs",
    "model-invocation-job",
    "model-invocation-jobs",
    "prompt-routers",
    "provisioned-model-throughput",
    "provisioned-model-throughputs",
    "resource-policy",
    "tagResource",
    "untagResource",
    "use-case-for-model-access",
};

struct allowed_read {
    std::string_view resource;
    std::string_view list;  ///< GET /{resource}
    std::string_view get;   ///< GET /{resource}/{id}
};

constexpr std::array<allowed_read, 2> allowed = {{
    {"inference-profiles", "ListInferenceProfiles", "GetInferenceProfile"},
    {"foundation-models", "ListFoundationModels", "GetFoundationModel"},
}};

constexpr std::string_view allowed_names =
    "ListInferenceProfiles, GetInferenceProfile, ListFoundationModels, GetFoundationModel";

error refused(http::verb method, std::string_view path) {
    return {http::status::forbidden, "AccessDeniedException",
            "bedrock-gateway passes only read-only control-plane calls (" +
                std::string(allowed_names) + "); " + std::string(http::to_string(method)) + " " +
                std::string(path.substr(0, 200)) + " is not one and was not sent upstream"};
}

}  // namespace

bool is_control_plane_resource(std::string_view first_segment) {
    return std::find(control_resources.begin(), control_resources.end(), first_segment) !=
           control_resources.end();
}

result<std::optional<control_request>> parse_control_target(http::verb method,
                                                            std::string_view target) {
    auto parsed = boost::urls::parse_origin_form(target);
    if (!parsed) return validation_error("request target is not a valid origin-form path");
    const boost::urls::url_view& url = *parsed;
    std::vector<boost::urls::pct_string_view> segs;
    for (auto seg : url.encoded_segments()) segs.push_back(seg);
    // Empty segments where the endpoint's path meets the API path are absent, as in
    // parse_runtime_target: `//inference-profiles` (endpoint `http://gw:8080/`) and
    // `/eu-west-1//inference-profiles` (endpoint `http://gw:8080/eu-west-1/`).
    const auto not_empty = [](boost::urls::pct_string_view s) { return !s.empty(); };
    const auto first = std::find_if(segs.begin(), segs.end(), not_empty);
    const bool leading_empty = first != segs.begin();
    segs.erase(segs.begin(), first);
    if (segs.empty()) return std::optional<control_request>{};
    // `/{region}/inference-profiles`: the same region prefix as the runtime API's (and, as
    // there, none after a leading empty segment).
    std::string region_prefix;
    if (!is_control_plane_resource(segs[0])) {
        const auto resource = std::find_if(segs.begin() + 1, segs.end(), not_empty);
        if (leading_empty || resource == segs.end() || !is_control_plane_resource(*resource))
            return std::optional<control_request>{};
        region_prefix = segs[0].decode();
        segs.erase(segs.begin(), resource);
    }
    const auto read = std::find_if(allowed.begin(), allowed.end(),
                                   [&](const allowed_read& a) { return segs[0] == a.resource; });
    if (read == allowed.end() || method != http::verb::get || segs.size() > 2)
        return refused(method, url.encoded_path());
    control_request out;
    out.region_prefix = std::move(region_prefix);
    out.wire_path = "/" + std::string(read->resource);
    // A presigned request's signature is the client's, for the gateway: it goes, and the
    // gateway signs in headers.
    stripped_query query = strip_sigv4_query(url.encoded_query());
    out.query_credential = std::move(query.credential);
    if (segs.size() == 1) {
        out.operation = read->list;
        out.query = std::move(query.rest);
        return std::optional<control_request>(std::move(out));
    }
    const std::string id = segs[1].decode();
    if (id.empty() || id.size() > max_label_bytes)
        return validation_error("the identifier in " + std::string(read->get) + " must be 1 to " +
                                std::to_string(max_label_bytes) + " bytes");
    if (id == "." || id == ".." ||
        !std::all_of(id.begin(), id.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; }))
        return validation_error("the identifier in " + std::string(read->get) +
                                " must be printable ASCII without spaces, not a dot segment");
    if (!query.rest.empty())
        return validation_error(std::string(read->get) + " takes no query parameters");
    out.operation = read->get;
    out.wire_path += "/" + encode_label(id);
    return std::optional<control_request>(std::move(out));
}

}  // namespace bgw::routing
