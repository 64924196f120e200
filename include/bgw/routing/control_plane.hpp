#pragma once
/// The read-only part of the Bedrock control plane that apps reach through the gateway's one
/// endpoint (Claude Code lists inference profiles, model pickers list foundation models), and
/// the refusal of everything else of it. Paths and methods come from the `bedrock` service model
/// (botocore `bedrock/2023-04-20/service-2.json`); the allow-list is explicit and short.

#include "bgw/error.hpp"

#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/verb.hpp>

namespace bgw::routing {

/// An allowed control-plane read: `GET /inference-profiles[/{id}]`,
/// `GET /foundation-models[/{id}]`.
struct control_request {
    std::string_view operation;  ///< "ListInferenceProfiles", ... (service model name)
    std::string wire_path;       ///< the path to send upstream, the label re-encoded canonically
    std::string query;  ///< raw query (without '?'): the List operations take filters; never
                        ///< with the SigV4 query-signing parameters (strip_sigv4_query)
    std::string region_prefix;  ///< decoded `/{region}/...` prefix, unchecked; empty when none
    /// The decoded `X-Amz-Credential` of a query-signed request, empty when none (for
    /// choose_region's weak intent).
    std::string query_credential = {};
};

/// The first path segments of the control plane's resources (every `requestUri` of the
/// `bedrock` service model starts with one of them).
bool is_control_plane_resource(std::string_view first_segment);

/// Recognises a control-plane target, after an optional region prefix (with the runtime API's
/// leniency: empty segments where the endpoint's path meets the API path are absent, and the
/// SigV4 query-signing parameters are dropped):
/// - nullopt: not the control plane (the runtime API, or nothing the gateway knows);
/// - an allowed read: its operation, wire path and query;
/// - 403 AccessDeniedException for any other method or path under a control-plane resource
///   (creating or deleting profiles, jobs, throughput, guardrails, ...): never sent upstream;
/// - 400 ValidationException for a malformed target or label.
result<std::optional<control_request>> parse_control_target(boost::beast::http::verb method,
                                                            std::string_view target);

}  // namespace bgw::routing
